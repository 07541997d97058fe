"""The daemon's web server and page (issue 18). A package, so that its conftest.py does not shadow test/conftest.py
(both would otherwise be imported as the module ``conftest``)."""
