from django.urls import path

from catalog import views

app_name = "catalog"

urlpatterns = [
    path("", views.listing_list, name="listing-list"),
    path("healthz", views.healthz, name="healthz"),
]
