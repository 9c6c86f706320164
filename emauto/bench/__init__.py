"""What `emauto bench` runs. Every figure is measured in the run that prints it."""
