from django.urls import include, path

from catalog.views import accounts, drafts, pages, registry, review, seller

app_name = "catalog"

seller_patterns = [
    path("", seller.dashboard, name="seller-dashboard"),
    path("new/", drafts.listing_new, name="listing-create"),
    path("new/photos/", drafts.draft_photos_add, name="draft-photos"),
    path("uploads/", seller.photo_uploads, name="photo-uploads"),
    path("<int:pk>/", seller.listing_edit, name="listing-edit"),
    path("<int:pk>/delete/", seller.listing_delete, name="listing-delete"),
    path("<int:pk>/photos/", seller.photos_add, name="photos-add"),
    path("<int:pk>/photos/order/", seller.photos_reorder, name="photos-reorder"),
    path("<int:pk>/photos/<int:image_id>/delete/", seller.photo_delete, name="photo-delete"),
    path("<int:pk>/photos/<int:image_id>/move/", seller.photo_move, name="photo-move"),
    path("<int:pk>/suggestions/", seller.suggestions_panel, name="listing-suggestions"),
    path("<int:pk>/category/", seller.category_set, name="listing-category"),
]

staff_patterns = [
    path("review/", review.review_queue, name="review"),
    path("review/bulk-accept/", review.review_bulk_accept, name="review-bulk-accept"),
    path("review/undo/", review.review_undo, name="review-undo"),
    path("review/photos/<int:image_id>/label/", review.review_photo_label, name="review-photo-label"),
    path("review/<int:pk>/accept/", review.review_accept, name="review-accept"),
    path("review/<int:pk>/correct/", review.review_correct, name="review-correct"),
    path("review/<int:pk>/reject/", review.review_reject, name="review-reject"),
    path("listings/<int:pk>/", review.listing_audit, name="listing-audit"),
    path("models/", registry.registry, name="registry"),
    path("models/train/", registry.training_start, name="training-start"),
    path("models/rollback/", registry.model_version_rollback, name="model-rollback"),
    path("models/categories/", registry.category_add, name="category-add"),
    path("models/<int:pk>/", registry.model_version_detail, name="model-version"),
    path("models/<int:pk>/compare/", registry.model_version_compare, name="model-compare"),
    path("models/<int:pk>/activate/", registry.model_version_activate, name="model-activate"),
    path("models/<int:pk>/confusion.png", registry.confusion_chart, name="model-confusion"),
    path("models/<int:pk>/reliability.png", registry.reliability_chart, name="model-reliability"),
]

urlpatterns = [
    path("", pages.browse, name="browse"),
    path("listings/<int:pk>/", pages.listing_detail, name="listing-detail"),
    path("photos/<int:image_id>/<str:size>.webp", pages.photo_thumbnail, name="photo-thumbnail"),
    path("accounts/signup/", accounts.signup, name="signup"),
    path("sell/", include(seller_patterns)),
    path("staff/", include(staff_patterns)),
    path("healthz", pages.healthz, name="healthz"),
]
