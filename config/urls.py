from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from catalog.views import metrics as metrics_views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/", include("catalog.api.urls")),
    path("metrics", metrics_views.metrics, name="metrics"),
    path("", include("catalog.urls")),
]
if settings.DEBUG or settings.STORAGE_BACKEND == "local":
    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)

# JSON errors under /api/ (one shape with the API's own), Django's pages elsewhere.
handler400 = "catalog.api.errors.bad_request"
handler403 = "catalog.api.errors.permission_denied"
handler404 = "catalog.api.errors.page_not_found"
handler500 = "catalog.api.errors.server_error"
