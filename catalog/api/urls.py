from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from catalog.api import tokens, views

app_name = "api"

router = SimpleRouter()
router.register("listings", views.ListingViewSet, basename="listing")

urlpatterns = [
    path("classify", views.ClassifyView.as_view(), name="classify"),
    path("classify/<int:image_id>", views.ClassifyResultView.as_view(), name="classify-result"),
    path("token", tokens.TokenObtainView.as_view(), name="token"),
    path("token/revoke", tokens.TokenRevokeView.as_view(), name="token-revoke"),
    path("token/revoke-all", tokens.TokenRevokeAllView.as_view(), name="token-revoke-all"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    *router.urls,
]
