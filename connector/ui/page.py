"""HTML for the dashboards: every value escaped (`esc`), one layout, forms that carry the session's
CSRF token, and the gate in front of every page (a session, and on a POST the CSRF token).

No script runs on any page (the Content-Security-Policy allows none): a page that shows work
under way (a pull) reloads itself with a meta refresh.
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from aiohttp import web

from connector.faults import StoreUnavailable
from connector.services.errors import ServiceError
from connector.ui.session import (
    COOKIE,
    Session,
    Sessions,
    TooManyAttempts,
    clear_cookie,
    csrf_ok,
    set_cookie,
)

SESSION: web.RequestKey[Session] = web.RequestKey("ui_session", Session)
UiHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]

HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

CSS = """
body{font-family:system-ui,sans-serif;margin:0;color:#1d2733;background:#f5f7fa}
header{background:#1f3a5f;color:#fff;padding:.6rem 1.2rem;display:flex;gap:1rem;
 align-items:center;flex-wrap:wrap}
header a{color:#dbe7f5;text-decoration:none}header a:hover{text-decoration:underline}
header .who{margin-left:auto;font-size:.85rem}
header form{display:inline}
main{padding:1rem 1.2rem;max-width:80rem;box-sizing:border-box}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem}
table{border-collapse:collapse;width:100%;background:#fff;font-size:.9rem}
th,td{border:1px solid #d5dce5;padding:.35rem .5rem;text-align:left;vertical-align:top;
 overflow-wrap:break-word}
th{background:#e8eef5}
.id{font-family:monospace;font-size:.8rem;word-break:break-all}
form.inline{display:inline}
div.ids{min-width:24rem}
.data{overflow-wrap:anywhere;font-size:.85rem}
fieldset{background:#fff;border:1px solid #d5dce5;margin:.6rem 0}
label{display:block;margin:.3rem 0}label span{display:inline-block;min-width:11rem}
input[type=text],input[type=password],input[type=url],select{width:28rem;max-width:95%}
input.small{width:10rem}
textarea{width:40rem;max-width:95%;font-family:monospace}
button{cursor:pointer}
.flash{background:#fff6d5;border:1px solid #e5c94f;padding:.5rem;margin:.5rem 0}
.ok{color:#1b6e2d;font-weight:600}.bad{color:#a31515;font-weight:600}
.muted{color:#66707c;font-size:.85rem}
ul.terms{margin:0;padding-left:1.1rem}
progress{width:12rem}
"""


@dataclass(frozen=True, slots=True)
class Html:
    """Markup already made safe (built with `esc` from values)."""

    text: str

    def __str__(self) -> str:
        return self.text


def esc(value: object) -> str:
    """A value as HTML text: `Html` as it is, None as nothing, anything else escaped."""
    if isinstance(value, Html):
        return value.text
    if value is None:
        return ""
    return html.escape(str(value), quote=True)


def join(parts: Iterable[object], sep: str = "") -> Html:
    return Html(sep.join(esc(p) for p in parts))


def tag(name: str, content: object = None, /, **attrs: object) -> Html:
    """``<name attr="...">content</name>``; attribute names with ``_`` as ``-``; a True
    attribute without a value, a None or False one left out."""
    shown = []
    for key, value in attrs.items():
        attr = key.rstrip("_").replace("_", "-")
        if value is True:
            shown.append(f" {attr}")
        elif value is not None and value is not False:
            shown.append(f' {attr}="{esc(value)}"')
    return Html(f"<{name}{''.join(shown)}>{esc(content)}</{name}>")


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, empty: str = "None yet.") -> Html:
    body = [tag("tr", join(tag("td", c) for c in row)) for row in rows]
    if not body:
        return tag("p", empty, class_="muted")
    head = tag("thead", tag("tr", join(tag("th", h) for h in headers))) if headers else ""
    return tag("table", join([head, tag("tbody", join(body))]))


def terms(lines: Sequence[str]) -> Html:
    return tag("ul", join(tag("li", line) for line in lines), class_="terms")


def ident(value: object) -> Html:
    return tag("span", value, class_="id")


def field(
    label: str,
    name: str,
    *,
    value: object = None,
    kind: str = "text",
    placeholder: object = None,
    required: bool = False,
    hint: object = None,
) -> Html:
    control = Html(
        f'<input type="{esc(kind)}" name="{esc(name)}"'
        f"{_attr('value', value)}{_attr('placeholder', placeholder)}"
        f"{' required' if required else ''}>"
    )
    note = tag("span", hint, class_="muted") if hint else ""
    return tag("label", join([tag("span", label), control, " ", note]))


def text_area(
    label: str, name: str, *, placeholder: object = None, rows: int = 8, hint: object = None
) -> Html:
    control = tag("textarea", "", name=name, rows=rows, placeholder=placeholder, required=True)
    note = tag("span", hint, class_="muted") if hint else ""
    return tag("label", join([tag("span", label), Html("<br>"), control, " ", note]))


def small_input(name: str, placeholder: str, *, required: bool = False) -> Html:
    """A text input without a label of its own (in a table row's form), named by `placeholder`."""
    return Html(
        f'<input type="text" name="{esc(name)}" placeholder="{esc(placeholder)}"'
        f' aria-label="{esc(placeholder)}" class="small"{" required" if required else ""}>'
    )


def _attr(name: str, value: object) -> str:
    return "" if value is None else f' {name}="{esc(value)}"'


def select(label: str, name: str, options: Iterable[tuple[str, str]], chosen: str | None = None) -> Html:
    opts = join(tag("option", text, value=value, selected=value == chosen) for value, text in options)
    return tag("label", join([tag("span", label), tag("select", opts, name=name)]))


def hidden(name: str, value: object) -> Html:
    return Html(f'<input type="hidden" name="{esc(name)}" value="{esc(value)}">')


def form(
    action: str,
    session: Session,
    content: object,
    button: str,
    *,
    back: str | None = None,
    inline: bool = False,
    legend: str | None = None,
) -> Html:
    """A POST form with the session's CSRF token (and where to go back to after it)."""
    inner = join(
        [
            hidden("csrf", session.csrf),
            hidden("back", back) if back else "",
            content,
            tag("button", button, type="submit"),
        ]
    )
    if legend is not None:
        inner = tag("fieldset", join([tag("legend", legend), inner]))
    return tag("form", inner, method="post", action=action, class_="inline" if inline else None)


def path_id(value: str) -> str:
    """An id as one path segment (any character percent-encoded)."""
    return quote(value, safe="")


@dataclass(frozen=True, slots=True)
class Site:
    """One dashboard: its title, the base path, the pages of its navigation bar."""

    title: str
    base: str
    nav: tuple[tuple[str, str], ...]  # (path under base, label)

    def url(self, path: str = "/") -> str:
        return self.base + path

    async def render(
        self,
        request: web.Request,
        heading: str,
        body: object,
        *,
        status: int = 200,
        refresh: int | None = None,
    ) -> web.Response:
        session = request.get(SESSION)
        links: list[object] = [tag("strong", self.title)]
        if session is not None:
            links += [tag("a", label, href=self.url(path)) for path, label in self.nav]
            links.append(
                tag("span", form(self.url("/logout"), session, "", "Log out", inline=True), class_="who")
            )
        sessions: Sessions | None = request.config_dict.get(SESSIONS)
        notes: list[str] = []
        if sessions is not None and session is not None:
            with contextlib.suppress(StoreUnavailable):  # the page still shows; the notes wait
                notes = await sessions.take_flash(session)
        meta = Html(f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh else "")
        doc = Html(
            "<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<title>{esc(heading)} - {esc(self.title)}</title>{meta}"
            f'<link rel="stylesheet" href="{esc(self.url("/style.css"))}"></head><body>'
            f"{tag('header', join(links))}<main>"
            f"{join(tag('div', n, class_='flash') for n in notes)}"
            f"{tag('h1', heading)}{esc(body)}</main></body></html>"
        )
        return web.Response(text=doc.text, content_type="text/html", status=status, headers=HEADERS)


SESSIONS: web.AppKey[Sessions] = web.AppKey("ui_sessions", Sessions)


def safe_back(value: object, site: Site) -> str:
    """Where a form goes back to: a page of this dashboard only (no other site)."""
    text = str(value or "")
    if text.startswith(site.base + "/") and "//" not in text and "\\" not in text:
        return text
    return site.url("/")


def ui_app(
    site: Site, sessions: Sessions, routes: Sequence[web.RouteDef], *, secret_name: str
) -> web.Application:
    """A dashboard as an aiohttp app to mount at ``site.base``: its login page (the secret is
    `secret_name`), logout, style sheet, and `routes` behind the gate."""
    public = {site.url("/login"), site.url("/style.css")}

    @web.middleware
    async def gate(request: web.Request, handler: UiHandler) -> web.StreamResponse:
        if request.path in public:
            return await handler(request)
        try:
            session = await sessions.get(request.cookies.get(COOKIE))
        except StoreUnavailable as exc:
            return await _unavailable(request, site, exc)
        if session is None:
            raise web.HTTPSeeOther(site.url("/login"), headers=HEADERS)
        request[SESSION] = session
        if request.method != "POST":
            try:
                return await handler(request)
            except (ServiceError, StoreUnavailable) as exc:
                status = 503 if isinstance(exc, StoreUnavailable) else 400
                return await site.render(request, "Not possible", tag("p", _problem(exc)), status=status)
        posted = await request.post()
        token = posted.get("csrf")
        if not csrf_ok(session, token if isinstance(token, str) else None):
            return await site.render(
                request,
                "Refused",
                tag("p", "The form's CSRF token is missing or wrong: reload the page and try again."),
                status=403,
            )
        try:
            return await handler(request)
        except (ServiceError, StoreUnavailable) as exc:
            try:
                await sessions.flash(session, _problem(exc))
            except StoreUnavailable as down:
                return await _unavailable(request, site, down)
            raise web.HTTPSeeOther(safe_back(posted.get("back"), site), headers=HEADERS) from None

    async def login_page(request: web.Request) -> web.Response:
        return await _login(request, site, secret_name)

    async def login(request: web.Request) -> web.StreamResponse:
        posted = await request.post()
        secret = posted.get("secret")
        try:
            session = await sessions.login(secret if isinstance(secret, str) else "", request.remote or "?")
        except TooManyAttempts as exc:
            return await _login(request, site, secret_name, str(exc), status=429)
        except StoreUnavailable as exc:
            return await _login(request, site, secret_name, _problem(exc), status=503)
        if session is None:
            return await _login(request, site, secret_name, f"Wrong {secret_name}.", status=401)
        response = web.HTTPSeeOther(site.url("/"), headers=HEADERS)
        set_cookie(response, request, session, site.base)
        raise response

    async def logout(request: web.Request) -> web.StreamResponse:
        await sessions.logout(request[SESSION])
        response = web.HTTPSeeOther(site.url("/login"), headers=HEADERS)
        clear_cookie(response, site.base)
        raise response

    async def style(request: web.Request) -> web.Response:
        return web.Response(text=CSS, content_type="text/css", headers={"X-Content-Type-Options": "nosniff"})

    app = web.Application(middlewares=[gate])
    app[SESSIONS] = sessions
    app.add_routes(
        [
            web.get("/login", login_page),
            web.post("/login", login),
            web.post("/logout", logout),
            web.get("/style.css", style),
            *routes,
        ]
    )
    return app


def _problem(exc: Exception) -> str:
    if isinstance(exc, ServiceError):
        return "; ".join([exc.reason, *exc.details])
    return f"the store is unavailable now, try again: {exc}"


async def _unavailable(request: web.Request, site: Site, exc: StoreUnavailable) -> web.Response:
    return await site.render(request, "Not possible", tag("p", _problem(exc)), status=503)


async def _login(
    request: web.Request, site: Site, secret_name: str, problem: str | None = None, status: int = 200
) -> web.Response:
    content = join(
        [
            tag("p", problem, class_="bad") if problem else "",
            tag(
                "form",
                join(
                    [
                        tag(
                            "label",
                            join(
                                [
                                    tag("span", secret_name.capitalize()),
                                    Html(
                                        '<input type="password" name="secret" autocomplete='
                                        '"current-password" required autofocus>'
                                    ),
                                ]
                            ),
                        ),
                        tag("button", "Log in", type="submit"),
                    ]
                ),
                method="post",
                action=site.url("/login"),
            ),
        ]
    )
    return await site.render(request, "Log in", content, status=status)
