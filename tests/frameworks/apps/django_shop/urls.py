from django.urls import path

from . import views

app_name = "shop"
urlpatterns = [
    path("products/new/", views.product_new, name="product_new"),
    path("products/<int:pk>/", views.product_detail, name="product_detail"),
    path("documents/new/", views.document_new, name="document_new"),
    path("documents/<int:pk>/", views.document_detail, name="document_detail"),
    path("documents/<int:pk>/download/", views.document_download, name="document_download"),
    path("stream/<slug:name>/", views.stream, name="stream"),
]
