"""The offline dataset catalogue, fetching public copies of its datasets, and n-gram decontamination."""
