"""Datasets, their images, label counts and zip imports: models, services, admin pages and API."""
