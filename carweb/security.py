"""Security headers on every response, by Flask-Talisman.

Every script and style of the pages comes from `static/`, so the policy allows no inline
code at all; `frame-ancestors 'none'` (and X-Frame-Options for older browsers) keeps the
delete and cancel pages out of other sites' frames. HSTS goes out only over HTTPS
(directly, or `X-Forwarded-Proto: https` from the proxy in front); carweb itself never
redirects to HTTPS, that is the proxy's job (nginx/).
"""

from flask_talisman import Talisman

CONTENT_SECURITY_POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "connect-src": "'self'",  # Socket.IO's WebSocket and polling, same origin
    "object-src": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}

talisman = Talisman()


def init_security_headers(app):
    """Send the headers on every response of `app`; cookies stay as the config says."""
    talisman.init_app(
        app,
        force_https=False,
        frame_options="DENY",
        content_security_policy=CONTENT_SECURITY_POLICY,
        referrer_policy="same-origin",
        session_cookie_secure=app.config["SESSION_COOKIE_SECURE"],
        session_cookie_samesite=app.config["SESSION_COOKIE_SAMESITE"],
        strict_transport_security_max_age=365 * 24 * 3600,
        strict_transport_security_include_subdomains=False,
    )
