import hashlib
import time

from django.conf import settings
from django.http import FileResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from .forms import DocumentForm, ProductForm
from .models import Document, Product


def product_new(request):
    form = ProductForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        product = form.save()
        return redirect("shop:product_detail", pk=product.pk)
    return render(request, "shop/form.html", {"form": form, "multipart": False})


def product_detail(request, pk):
    product = get_object_or_404(Product, pk=pk)
    return render(request, "shop/product.html", {"product": product})


def document_new(request):
    form = DocumentForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        document = form.save()
        return redirect("shop:document_detail", pk=document.pk)
    return render(request, "shop/form.html", {"form": form, "multipart": True})


def document_detail(request, pk):
    document = get_object_or_404(Document, pk=pk)
    digest = hashlib.sha256()
    with document.file.open("rb") as f:
        for chunk in f.chunks():
            digest.update(chunk)
    return render(request, "shop/document.html", {"document": document, "sha256": digest.hexdigest()})


def document_download(request, pk):
    document = get_object_or_404(Document, pk=pk)
    return FileResponse(document.file.open("rb"), as_attachment=True, filename=document.file.name.split("/")[-1])


def stream(request, name):
    """Sends one line, then waits (10 s at most) for the file STREAM_SIGNALS/name before the rest.

    A client that reads the first line before it makes that file proves the
    response is streamed, not buffered.
    """
    signal_file = settings.STREAM_SIGNALS / name

    def lines():
        yield "first line\n"
        deadline = time.monotonic() + 10
        while not signal_file.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        for number in range(100):
            yield f"line {number}\n"
        yield "signalled\n" if signal_file.exists() else "timed out\n"

    return StreamingHttpResponse(lines(), content_type="text/plain")
