"""A minimal Django project (one view, no database). No hotfix code anywhere."""

SECRET_KEY = "example-only-not-secret"  # an example project
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
DATABASES: dict = {}
USE_TZ = True
