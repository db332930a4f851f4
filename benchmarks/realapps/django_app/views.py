from django.http import HttpResponse, JsonResponse
from django.shortcuts import render

from common import HELLO, query_count, random_id, sorted_fortunes
from django_app.models import Fortune, World


def _world(world):
    return {"id": world.id, "randomNumber": world.randomnumber}


def json_(request):
    return JsonResponse({"message": HELLO})


def plaintext(request):
    return HttpResponse(HELLO, content_type="text/plain")


def db(request):
    return JsonResponse(_world(World.objects.get(id=random_id())))


def queries(request):
    count = query_count(request.GET.get("queries"))
    return JsonResponse([_world(World.objects.get(id=random_id())) for _ in range(count)], safe=False)


def fortunes(request):
    rows = Fortune.objects.values_list("id", "message")
    return render(request, "fortunes.html", {"fortunes": sorted_fortunes(rows)})


def updates(request):
    count = query_count(request.GET.get("queries"))
    worlds = [World.objects.get(id=random_id()) for _ in range(count)]
    final = {}
    for world in worlds:
        world.randomnumber = random_id()
        final[world.id] = world                 # a row drawn twice keeps its last number
    World.objects.bulk_update(sorted(final.values(), key=lambda w: w.id), ["randomnumber"])   # one UPDATE
    return JsonResponse([_world(final[world.id]) for world in worlds], safe=False)
