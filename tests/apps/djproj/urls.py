import json

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


urlpatterns = [path("", hello), path("echo/", echo), path("stream/", stream)]
