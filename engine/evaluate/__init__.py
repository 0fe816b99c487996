"""test.py and prompt_study.py: labelled evaluation, its runs, metrics, result files and reports."""
