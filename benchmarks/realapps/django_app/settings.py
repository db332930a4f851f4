"""Settings for the Django app: no middleware, no sessions, no migrations (the models are unmanaged:
the benchmark creates the tables). Connections are kept for the thread's life (CONN_MAX_AGE None)."""

import sys

from common import DB, TEMPLATES

SECRET_KEY = "realapps-benchmark-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "django_app.urls"
WSGI_APPLICATION = "django_app.wsgi.application"
INSTALLED_APPS = ["django_app"]
MIDDLEWARE = []
USE_TZ = False
USE_I18N = False
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": DB["host"],
        "PORT": DB["port"],
        "NAME": DB["dbname"],
        "USER": DB["user"],
        "CONN_MAX_AGE": None,
    }
}
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "DIRS": [TEMPLATES]}]
LOGGING = {"version": 1, "disable_existing_loggers": False,
           "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": sys.stderr}},
           "loggers": {"django.request": {"handlers": ["stderr"], "level": "ERROR"}}}
