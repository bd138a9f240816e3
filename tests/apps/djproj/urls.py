import json
import os

from django.core.signals import request_finished

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt


def hello(request):
    return HttpResponse("Hello from Django")


@csrf_exempt
def echo(request):
    return JsonResponse({"method": request.method, "body": request.body.decode(),
                         "path": request.path, "q": request.GET.dict(),
                         "ua": request.META.get("HTTP_USER_AGENT")})


def stream(request):
    return StreamingHttpResponse((f"line {i}\n" for i in range(3)), content_type="text/plain")


def mark(name):
    """Appends a line to DJANGO_MARKERS/name, when the test asks."""
    if os.environ.get("DJANGO_MARKERS"):
        with open(os.path.join(os.environ["DJANGO_MARKERS"], name), "a") as f:
            f.write("x\n")


request_finished.connect(lambda sender, **kwargs: mark("request_finished"), weak=False)


async def long_stream(request):
    """128 MiB, made as fast as it is sent."""
    async def chunks():
        for _ in range(2048):
            yield b"x" * 65536
    return StreamingHttpResponse(chunks(), content_type="application/octet-stream")


urlpatterns = [path("", hello), path("echo/", echo), path("stream/", stream), path("long/", long_stream)]
