"""Suggested labels for unlabelled images and labelling in bulk: the suggestions job, the Label page, the API."""
