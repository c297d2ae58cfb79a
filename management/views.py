"""The admin's home page (the domains' own pages are in datasets/, training/, serving/, health/ and
labelling/views.py)."""

from django.shortcuts import render


def home(request):
    return render(request, "home.html")
