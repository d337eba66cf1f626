"""A real local HTTP server speaking the subset of Stripe's REST API that RuAPI calls, for tests.

The official `stripe` library is pointed at it (STRIPE_API_BASE): form-encoded requests with
Stripe's bracket notation, Bearer auth, Idempotency-Key as Stripe honours it (the same key with the same
parameters replays the first response, with `Idempotent-Replayed: true`; with other parameters it is a
400 `idempotency_error`), Stripe-shaped errors. Covered:

    POST /v1/customers                       GET /v1/customers/{id}
    POST /v1/checkout/sessions (payment|setup) GET /v1/checkout/sessions/{id}
    POST /v1/payment_intents (off-session confirm)  GET /v1/payment_intents/{id}
    GET  /v1/setup_intents/{id}              GET /v1/payment_methods/{id}    GET /v1/charges/{id}
    POST /v1/invoices, /v1/invoiceitems, /v1/invoices/{id}/finalize

What Stripe does on its side (a customer paying on Checkout, a refund, a dispute) is a method here
that changes the state and returns the object, and `event()` + `sign()` make the webhook delivery,
signed exactly as Stripe signs: header `t=<unix>,v1=<hex HMAC-SHA256(secret, f"{t}.{payload}")>`.

A minimal hosted Checkout page for browser tests (no API key, like checkout.stripe.com):

    GET  /checkout/{session_id}      the page the session's `url` points at, with a "Pay" button
    POST /checkout/{session_id}/pay  pays (`pay()`), delivers the signed checkout.session.completed
                                     to `webhook_url` (when set), then 303-redirects to success_url
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import threading
import time
import urllib.error
import urllib.request
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlparse

API_VERSION = "2025-03-31.basil"


def sign(payload: str, secret: str, *, timestamp: int | None = None) -> str:
    """The Stripe-Signature header for `payload`, as Stripe computes it."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def parse_form(body: str) -> dict[str, Any]:
    """Stripe's bracket notation (`a[b][0][c]=v`) -> nested dicts and lists."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        parts = re.findall(r"[^\[\]]+|\[\]", key)
        node: Any = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            nxt = None if last else parts[i + 1]
            container_default = [] if nxt is not None and (nxt.isdigit() or nxt == "[]") else {}
            if isinstance(node, list):
                index = len(node) if part == "[]" else int(part)
                while len(node) <= index:
                    node.append(None)
                if last:
                    node[index] = value
                else:
                    if node[index] is None:
                        node[index] = container_default
                    node = node[index]
            else:
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, container_default)
    return root


class StripeStandIn:
    """Start with `with StripeStandIn() as stripe_server:`; `api_base` is what STRIPE_API_BASE takes."""

    def __init__(self, *, api_key: str = "sk_test_standin") -> None:
        self.api_key = api_key
        self.lock = threading.Lock()
        self.objects: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, dict[str, Any], dict[str, str]]] = []
        # Idempotency-Key -> (method and path, params, status, response), as Stripe keeps them (24 h there).
        self.idempotent: dict[str, tuple[str, dict[str, Any], int, dict[str, Any]]] = {}
        self.decline_cards = False  # off-session payment intents fail with card_declined
        # The hosted Checkout page's "Pay" delivers checkout.session.completed here, signed with this.
        self.webhook_url: str | None = None
        self.webhook_secret: str | None = None
        self.deliveries: list[tuple[str, int]] = []  # (event id, the endpoint's HTTP status)
        self._ids = itertools.count(1)
        handler = type("Handler", (_Handler,), {"standin": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="stripe-standin", daemon=True)

    # --- lifecycle --------------------------------------------------------------------------
    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> StripeStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reset(self) -> None:
        with self.lock:
            self.objects.clear()
            self.requests.clear()
            self.idempotent.clear()
            self.decline_cards = False
            self.webhook_url = self.webhook_secret = None
            self.deliveries.clear()

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_standin{next(self._ids):06d}"

    def calls(self, method: str, path_prefix: str) -> list[dict[str, Any]]:
        return [params for m, p, params, _ in self.requests if m == method and p.startswith(path_prefix)]

    def objects_of(self, kind: str) -> list[dict[str, Any]]:
        """Every object of this kind Stripe holds, e.g. "checkout.session" (what was really created)."""
        with self.lock:
            return [dict(obj) for obj in self.objects.values() if obj.get("object") == kind]

    def _store(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.objects[obj["id"]] = obj
        return obj

    # --- the REST API -----------------------------------------------------------------------
    def handle(self, method: str, path: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        parts = [p for p in path.split("/") if p][1:]  # drop "v1"
        route = "/".join(parts)
        if method == "POST" and route == "customers":
            return 200, self._store({"id": self.new_id("cus"), "object": "customer", "name": params.get("name"),
                                     "email": params.get("email"), "metadata": params.get("metadata", {})})  # fmt: skip
        if method == "POST" and route == "checkout/sessions":
            return self._session_create(params)
        if method == "POST" and route == "payment_intents":
            return self._payment_intent_create(params)
        if method == "POST" and route == "invoiceitems":
            item = {"id": self.new_id("ii"), "object": "invoiceitem", "customer": params["customer"],
                    "invoice": params.get("invoice"), "amount": int(params["amount"]),
                    "currency": params["currency"], "description": params.get("description"),
                    "metadata": params.get("metadata", {})}  # fmt: skip
            invoice = self.objects.get(item["invoice"] or "")
            if invoice is not None:
                invoice["lines"]["data"].append(item)
                invoice["amount_due"] += item["amount"]
                invoice["total"] += item["amount"]
            return 200, self._store(item)
        if method == "POST" and route == "invoices":
            return 200, self._store({
                "id": self.new_id("in"), "object": "invoice", "customer": params["customer"], "status": "draft",
                "collection_method": params.get("collection_method"), "metadata": params.get("metadata", {}),
                "description": params.get("description"), "amount_due": 0, "amount_paid": 0, "total": 0,
                "currency": "usd", "lines": {"object": "list", "data": []}, "hosted_invoice_url": None,
            })  # fmt: skip
        if method == "POST" and len(parts) == 3 and parts[0] == "invoices" and parts[2] == "finalize":
            invoice = self.objects.get(parts[1])
            if invoice is None:
                return self._missing(parts[1])
            invoice["status"] = "open"
            invoice["hosted_invoice_url"] = f"{self.api_base}/invoice/{invoice['id']}"
            return 200, invoice
        if method == "GET" and len(parts) == 2:
            obj = self.objects.get(parts[1])
            return (200, obj) if obj is not None else self._missing(parts[1])
        return 404, {
            "error": {"type": "invalid_request_error", "message": f"Unrecognized request URL ({method} {path})"}
        }

    def _missing(self, obj_id: str) -> tuple[int, dict[str, Any]]:
        return 404, {"error": {"type": "invalid_request_error", "code": "resource_missing",
                               "message": f"No such object: '{obj_id}'"}}  # fmt: skip

    def _session_create(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        mode = params.get("mode")
        if mode not in ("payment", "setup"):
            return 400, {"error": {"type": "invalid_request_error", "message": "mode must be payment or setup"}}
        amount = None
        if mode == "payment":
            amount = sum(
                int(li["price_data"]["unit_amount"]) * int(li.get("quantity", 1)) for li in params["line_items"]
            )
        session_id = self.new_id("cs_test")
        return 200, self._store({
            "id": session_id, "object": "checkout.session", "mode": mode, "status": "open",
            "payment_status": "unpaid" if mode == "payment" else "no_payment_required",
            "amount_total": amount, "currency": "usd" if mode == "payment" else None,
            "customer": params.get("customer"), "client_reference_id": params.get("client_reference_id"),
            "metadata": params.get("metadata", {}), "success_url": params.get("success_url"),
            "cancel_url": params.get("cancel_url"), "payment_intent": None, "setup_intent": None,
            "url": f"{self.api_base}/checkout/{session_id}",
            "_intent_metadata": (params.get("payment_intent_data") or params.get("setup_intent_data") or {}).get(
                "metadata", {}),
        })  # fmt: skip

    def _payment_intent_create(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        intent = {
            "id": self.new_id("pi"), "object": "payment_intent", "amount": int(params["amount"]),
            "currency": params.get("currency", "usd"), "customer": params.get("customer"),
            "payment_method": params.get("payment_method"), "metadata": params.get("metadata", {}),
            "status": "requires_confirmation", "latest_charge": None, "last_payment_error": None,
        }  # fmt: skip
        self._store(intent)
        if params.get("confirm") in ("true", True):
            if self.decline_cards or params.get("payment_method") not in self.objects:
                error = {"type": "card_error", "code": "card_declined", "decline_code": "generic_decline",
                         "message": "Your card was declined.", "payment_intent": dict(intent)}  # fmt: skip
                intent["status"] = "requires_payment_method"
                intent["last_payment_error"] = {"message": error["message"], "code": "card_declined"}
                error["payment_intent"] = dict(intent)
                return 402, {"error": error}
            self._succeed(intent)
        return 200, intent

    def _succeed(self, intent: dict[str, Any]) -> dict[str, Any]:
        charge = self._store({
            "id": self.new_id("ch"), "object": "charge", "amount": intent["amount"], "amount_refunded": 0,
            "currency": intent["currency"], "payment_intent": intent["id"], "paid": True, "refunded": False,
            "status": "succeeded", "customer": intent.get("customer"), "disputed": False,
        })  # fmt: skip
        intent["status"] = "succeeded"
        intent["latest_charge"] = charge["id"]
        return charge

    # --- what happens on Stripe's side ------------------------------------------------------
    def pay(self, session_id: str, *, delayed: bool = False) -> dict[str, Any]:
        """The customer completes Checkout: a card payment (paid at once), a delayed method
        (`delayed`: completed but unpaid until `settle_delayed`), or a card saved in setup mode."""
        with self.lock:
            session = self.objects[session_id]
            session["status"] = "complete"
            if session["mode"] == "setup":
                method = self._store({"id": self.new_id("pm"), "object": "payment_method", "type": "card",
                                      "card": {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2034},
                                      "customer": session["customer"]})  # fmt: skip
                setup = self._store({"id": self.new_id("seti"), "object": "setup_intent", "status": "succeeded",
                                     "payment_method": method["id"], "customer": session["customer"],
                                     "metadata": session["_intent_metadata"]})  # fmt: skip
                session["setup_intent"] = setup["id"]
                return self.public(session)
            intent = self._store({
                "id": self.new_id("pi"), "object": "payment_intent", "amount": session["amount_total"],
                "currency": "usd", "customer": session["customer"], "metadata": session["_intent_metadata"],
                "status": "processing", "latest_charge": None, "last_payment_error": None,
            })  # fmt: skip
            session["payment_intent"] = intent["id"]
            if not delayed:
                self._succeed(intent)
                session["payment_status"] = "paid"
            return self.public(session)

    def settle_delayed(self, session_id: str, *, succeeded: bool = True) -> dict[str, Any]:
        with self.lock:
            session = self.objects[session_id]
            intent = self.objects[session["payment_intent"]]
            if succeeded:
                self._succeed(intent)
                session["payment_status"] = "paid"
            else:
                intent["status"] = "requires_payment_method"
            return self.public(session)

    def charge_of(self, session_or_intent_id: str) -> dict[str, Any]:
        obj = self.objects[session_or_intent_id]
        intent = self.objects[obj["payment_intent"]] if obj["object"] == "checkout.session" else obj
        return self.objects[intent["latest_charge"]]

    def refund(self, session_or_intent_id: str, amount_cents: int | None = None) -> dict[str, Any]:
        """Refund (part of) the payment's charge; returns the charge with its cumulative amount_refunded."""
        with self.lock:
            charge = self.charge_of(session_or_intent_id)
            amount = charge["amount"] - charge["amount_refunded"] if amount_cents is None else amount_cents
            charge["amount_refunded"] += amount
            charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
            return dict(charge)

    def dispute(self, session_or_intent_id: str, *, status: str = "needs_response") -> dict[str, Any]:
        with self.lock:
            charge = self.charge_of(session_or_intent_id)
            charge["disputed"] = True
            return self._store({"id": self.new_id("dp"), "object": "dispute", "amount": charge["amount"],
                                "charge": charge["id"], "payment_intent": charge["payment_intent"],
                                "currency": "usd", "reason": "fraudulent", "status": status})  # fmt: skip

    def pay_invoice(self, invoice_id: str) -> dict[str, Any]:
        with self.lock:
            invoice = self.objects[invoice_id]
            invoice["status"] = "paid"
            invoice["amount_paid"] = invoice["amount_due"]
            return dict(invoice)

    def deliver(self, event: dict[str, Any]) -> int:
        """POST `event` to `webhook_url`, signed like Stripe; returns the endpoint's HTTP status."""
        payload = json.dumps(event)
        request = urllib.request.Request(
            self.webhook_url or "", data=payload.encode(), method="POST",
            headers={"Content-Type": "application/json; charset=utf-8",
                     "Stripe-Signature": sign(payload, self.webhook_secret or "")},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        with self.lock:
            self.deliveries.append((event["id"], status))
        return status

    # --- the hosted Checkout page -----------------------------------------------------------
    def checkout_page(self, method: str, path: str) -> tuple[int, dict[str, str], bytes] | None:
        """GET /checkout/{id} (the page) and POST /checkout/{id}/pay (the button); None: not a page path."""
        match = re.fullmatch(r"/checkout/([A-Za-z0-9_]+)(/pay)?", path)
        if match is None:
            return None
        session_id, pay = match.group(1), bool(match.group(2))
        with self.lock:
            session = self.objects.get(session_id)
            session = dict(session) if session and session.get("object") == "checkout.session" else None
        if session is None:
            return 404, {"Content-Type": "text/plain"}, b"No such Checkout session"
        if method == "GET" and not pay:
            amount = f"${(session['amount_total'] or 0) / 100:.2f}"
            html = (
                "<!doctype html><html><head><title>Stand-in Checkout</title></head><body>"
                f"<h1>Pay {escape(amount)}</h1><p data-testid=session>{escape(session_id)}</p>"
                f"<form method=post action='/checkout/{escape(session_id)}/pay'>"
                "<button type=submit>Pay</button></form></body></html>"
            )
            return 200, {"Content-Type": "text/html; charset=utf-8"}, html.encode()
        if method == "POST" and pay:
            if session["status"] == "open":
                paid = self.pay(session_id)
                if self.webhook_url:
                    self.deliver(self.event("checkout.session.completed", paid))
            return 303, {"Location": session["success_url"] or "/"}, b""
        return 405, {"Content-Type": "text/plain"}, b"Method not allowed"

    def public(self, obj: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in obj.items() if not k.startswith("_")}

    def event(self, type_: str, obj: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
        return {"id": event_id or self.new_id("evt"), "object": "event", "api_version": API_VERSION,
                "created": int(time.time()), "type": type_, "livemode": False, "pending_webhooks": 1,
                "data": {"object": self.public(obj)}}  # fmt: skip


class _Handler(BaseHTTPRequestHandler):
    standin: StripeStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _serve(self, method: str) -> None:
        url = urlparse(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        standin = self.standin
        page = standin.checkout_page(method, url.path)
        if page is not None:
            status, headers, content = page
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(content))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(content)
            return
        params = parse_form(body if method == "POST" else url.query)
        replayed = False
        if self.headers.get("Authorization") != f"Bearer {standin.api_key}":
            status, payload = 401, {"error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}}
        else:
            key = self.headers.get("Idempotency-Key") if method == "POST" else None
            with standin.lock:
                standin.requests.append((method, url.path, params, dict(self.headers)))
                if key and key in standin.idempotent:
                    # Stripe: the same key with the same request replays the first response (same object,
                    # errors included); with other parameters it is refused, and nothing is created.
                    first_request, first_params, status, payload = standin.idempotent[key]
                    if (first_request, first_params) == (f"{method} {url.path}", params):
                        replayed = True
                    else:
                        status, payload = 400, {"error": {
                            "type": "idempotency_error",
                            "message": "Keys for idempotent requests can only be used with the same parameters "
                                       "they were first used with. Try using a key other than "
                                       f"'{key}' if you meant to execute a different request.",
                        }}  # fmt: skip
                else:
                    status, payload = standin.handle(method, url.path, params)
                    payload = standin.public(payload) if "error" not in payload else payload
                    if key:
                        standin.idempotent[key] = (f"{method} {url.path}", params, status, payload)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Request-Id", f"req_{time.monotonic_ns()}")
        if replayed:
            self.send_header("Idempotent-Replayed", "true")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")
