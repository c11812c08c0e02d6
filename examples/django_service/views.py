from __future__ import annotations

import os

import greeting
from django.http import JsonResponse


def hello(request):  # noqa: ANN001, ANN201 - a Django view
    try:
        return JsonResponse({"greeting": greeting.greet("world"), "pid": os.getpid()})
    except Exception as exc:  # noqa: BLE001 - a 500 that says which process failed
        return JsonResponse({"error": f"{type(exc).__name__}: {exc}", "pid": os.getpid()}, status=500)
