"""Training losses of APRIL-GAN (focal + binary Dice per stage, METHOD §6)."""
from .segmentation import BinaryDiceLoss, FocalLoss, dice_loss, focal_loss, segmentation_loss

__all__ = ["BinaryDiceLoss", "FocalLoss", "dice_loss", "focal_loss", "segmentation_loss"]
