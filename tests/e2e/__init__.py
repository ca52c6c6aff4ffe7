"""Browser tests: carweb's pages in headless Chromium against the live server."""
