"""What a person reads: an evaluation as markdown, plots and report.html, the files of its report folder, and the
model card. Below evaluation: these modules take an evaluation's report object and never import evaluation."""
