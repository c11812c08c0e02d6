from __future__ import annotations

import os

import greeting
from django.http import JsonResponse


def hello(request):  # a Django view
    try:
        return JsonResponse({"greeting": greeting.greet("world"), "pid": os.getpid()})
    except Exception as exc:  # a 500 that says which process failed
        return JsonResponse({"error": f"{type(exc).__name__}: {exc}", "pid": os.getpid()}, status=500)
