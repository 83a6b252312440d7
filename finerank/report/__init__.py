"""What a person reads: the model card and report.html."""
