"""One stack per bounded context, plus the shared platform, the models and the API."""
