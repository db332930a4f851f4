from django.urls import path

from django_app import views

urlpatterns = [
    path("json", views.json_),
    path("plaintext", views.plaintext),
    path("db", views.db),
    path("queries", views.queries),
    path("fortunes", views.fortunes),
    path("updates", views.updates),
]
