"""Management API for invoices (DRF): list an organisation's monthly invoices, download one as PDF.

Tenancy and permissions come from accounts.api.gate.OrgScopedView (the one gate); reads go through
billing.selectors, which always take `org=`.
"""

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.response import Response

from accounts.api.gate import OrgScopedView
from accounts.api.views import ERRORS
from accounts.permissions import Perm
from billing import selectors
from billing.models import Invoice
from billing.money import format_usd


class InvoiceSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    number = serializers.CharField()
    period_start = serializers.DateField()
    period_end = serializers.DateField()
    opening_balance_usd = serializers.CharField()
    topups_usd = serializers.CharField()
    usage_usd = serializers.CharField()
    closing_balance_usd = serializers.CharField()
    is_postpaid = serializers.BooleanField()
    pdf_url = serializers.CharField()


def _invoice(invoice, request) -> dict:
    return {
        "id": invoice.id,
        "number": invoice.number,
        "period_start": invoice.period_start,
        "period_end": invoice.period_end,
        "opening_balance_usd": format_usd(invoice.opening_balance_nanos),
        "topups_usd": format_usd(invoice.topups_nanos),
        "usage_usd": format_usd(invoice.usage_nanos),
        "closing_balance_usd": format_usd(invoice.closing_balance_nanos),
        "is_postpaid": invoice.is_postpaid,
        "pdf_url": request.build_absolute_uri(f"{invoice.id}/pdf/"),
    }


class InvoiceListView(OrgScopedView):
    required = {"GET": Perm.BILLING_VIEW}
    serializer_class = InvoiceSerializer
    pagination_class = None  # a plain list (one invoice a month); without this the schema claims a paginated page

    @extend_schema(tags=["billing"], responses={200: InvoiceSerializer(many=True), **ERRORS})
    def get(self, request, org_id: int):
        invoices = selectors.invoice_list(org=self.org)
        return Response([_invoice(invoice, request) for invoice in invoices])


class InvoicePdfView(OrgScopedView):
    required = {"GET": Perm.BILLING_VIEW}
    serializer_class = InvoiceSerializer

    @extend_schema(
        tags=["billing"], responses={(200, "application/pdf"): OpenApiResponse(description="The PDF"), **ERRORS}
    )
    def get(self, request, org_id: int, invoice_id: int):
        try:
            invoice = selectors.invoice_get(org=self.org, invoice_id=invoice_id)
        except Invoice.DoesNotExist as exc:  # another tenant's id looks exactly like a missing one
            raise exceptions.NotFound("No such invoice.") from exc
        response = HttpResponse(bytes(invoice.pdf), content_type="application/pdf")
        response["Content-Disposition"] = f'attachment; filename="{invoice.number}.pdf"'
        return response
