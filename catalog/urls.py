from django.urls import include, path

from catalog.views import accounts, pages, seller

app_name = "catalog"

seller_patterns = [
    path("", seller.dashboard, name="seller-dashboard"),
    path("new/", seller.listing_create, name="listing-create"),
    path("<int:pk>/", seller.listing_edit, name="listing-edit"),
    path("<int:pk>/delete/", seller.listing_delete, name="listing-delete"),
    path("<int:pk>/photos/", seller.photos_add, name="photos-add"),
    path("<int:pk>/photos/order/", seller.photos_reorder, name="photos-reorder"),
    path("<int:pk>/photos/<int:image_id>/delete/", seller.photo_delete, name="photo-delete"),
    path("<int:pk>/photos/<int:image_id>/move/", seller.photo_move, name="photo-move"),
    path("<int:pk>/suggestions/", seller.suggestions_panel, name="listing-suggestions"),
    path("<int:pk>/category/", seller.category_set, name="listing-category"),
]

urlpatterns = [
    path("", pages.browse, name="browse"),
    path("listings/<int:pk>/", pages.listing_detail, name="listing-detail"),
    path("photos/<int:image_id>/<str:size>.webp", pages.photo_thumbnail, name="photo-thumbnail"),
    path("accounts/signup/", accounts.signup, name="signup"),
    path("sell/", include(seller_patterns)),
    path("healthz", pages.healthz, name="healthz"),
]
