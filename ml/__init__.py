"""Pure computation (images, models, fit, transfer, export, engines, health, explain): no Django, nothing of the app."""
