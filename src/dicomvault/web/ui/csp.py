"""Content-Security-Policies (CSP Level 3) for our pages and for OHIF.

Our pages: scripts, styles, images and fetches from our origin only; no inline
script or style; no frames; forms post to ourselves.

OHIF needs exactly this on ``/viewer/`` and no more:

* ``'wasm-unsafe-eval'``: its image codecs (JPEG-LS, JPEG 2000, HTJ2K, libjpeg-turbo)
  are WebAssembly modules compiled at run time;
* ``worker-src 'self' blob:``: decoding runs in web workers, some started from blob URLs;
* ``style-src 'unsafe-inline'``: its UI library injects ``<style>`` elements (styles only;
  scripts stay ``'self'``);
* ``img-src data: blob:``: icons are inlined as data URLs, thumbnails as blob URLs;
* cross-origin isolation (COOP ``same-origin`` + COEP ``require-corp``, HTML §7.1.3) so
  ``SharedArrayBuffer`` is available to the volume loader.

Its image decoders (OpenJPEG, CharLS, libjpeg-turbo, OpenJPH compiled with Emscripten/embind)
build their JavaScript bindings with ``new Function`` and so need ``'unsafe-eval'``.  They run
in dedicated web workers, and a worker loaded from a URL takes its policy from its own
response (CSP3 §4.2.1), so only responses the browser fetches *as a worker script*
(Fetch Metadata ``Sec-Fetch-Dest: worker``) get ``OHIF_WORKER_CSP`` with ``'unsafe-eval'``;
the document, where patient text is rendered, never does.  The browser tests decode a
JPEG 2000 study to prove the codecs work under exactly this split.
"""

from __future__ import annotations

UI_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'; object-src 'none'"
)

OHIF_CSP = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self' blob:; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; "
    "connect-src 'self' data: blob:; media-src 'self' blob:; form-action 'self'; base-uri 'self'; "
    "frame-ancestors 'none'; object-src 'none'; frame-src 'none'; manifest-src 'self'"
)

#: Dedicated/shared worker scripts of OHIF only (no DOM): adds ``'unsafe-eval'`` for embind codecs.
OHIF_WORKER_CSP = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval' 'unsafe-eval'; worker-src 'self' blob:; "
    "connect-src 'self' data: blob:; img-src 'self' data: blob:; base-uri 'self'; object-src 'none'"
)
#: ``Sec-Fetch-Dest`` values of a worker script request (Fetch Metadata Request Headers §2.1).
WORKER_DESTINATIONS = frozenset({"worker", "sharedworker"})
