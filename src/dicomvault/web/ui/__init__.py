"""Our own web pages (the secure front door) and the OHIF Viewer's serving rules.

``pages`` renders server-side HTML shells, ``viewer`` serves OHIF under
``/viewer/``, ``api`` holds the small JSON endpoints the pages need
(``/ui/api/...``), ``csp`` the Content-Security-Policies.  No build step:
``static/`` holds plain ES modules and CSS.
"""
