"""The cocktail-effect report: from stored run results to tables, plots, HTML and Markdown."""
