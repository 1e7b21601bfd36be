"""Tasks: label tables (stay, prediction time, label) with a label type, declared per dataset, and split protocols."""
