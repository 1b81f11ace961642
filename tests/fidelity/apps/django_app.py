"""A one-file Django site for gunicorn, with the three middleware styles Django supports,
each waiting on its own path: a function middleware (``/mw-func``), a class whose
``__call__`` wraps ``get_response`` (``/mw-class``) and a ``MiddlewareMixin`` subclass's
``process_request`` (``/mw-mixin``). ``/sleep`` is a view that waits."""

from __future__ import annotations

import time
from collections.abc import Callable

import django
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.utils.deprecation import MiddlewareMixin
from fidelity_common import BIG, WAIT_S, slow_query

Handler = Callable[[HttpRequest], HttpResponse]


def func_middleware(get_response: Handler) -> Handler:
    def middleware(request: HttpRequest) -> HttpResponse:
        if request.path == "/mw-func":
            time.sleep(WAIT_S)
        return get_response(request)

    return middleware


class CallMiddleware:
    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path == "/mw-class":
            time.sleep(WAIT_S)
        return self.get_response(request)


class MixinMiddleware(MiddlewareMixin):
    def process_request(self, request: HttpRequest) -> None:
        if request.path == "/mw-mixin":
            time.sleep(WAIT_S)


settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    SECRET_KEY="fidelity-matrix-only",
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[
        f"{__name__}.func_middleware",
        f"{__name__}.CallMiddleware",
        f"{__name__}.MixinMiddleware",
    ],
)
django.setup()


def ok(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


def sleep(request: HttpRequest) -> HttpResponse:
    time.sleep(WAIT_S)
    return HttpResponse("slept")


def db(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(slow_query()))


def big(request: HttpRequest) -> HttpResponse:
    return JsonResponse(BIG, safe=False)


urlpatterns = [
    path("ping", ok),
    path("mw-func", ok),
    path("mw-class", ok),
    path("mw-mixin", ok),
    path("sleep", sleep),
    path("db", db),
    path("big", big),
]

from django.core.wsgi import get_wsgi_application  # noqa: E402  (after settings)

application = get_wsgi_application()
