"""Billing rules used by the job service. This version has a bug."""

TAX_RATE = 0.2


def line_total(item):
    return item["qty"] * item["unit_price"]


def invoice(order):
    """Total with tax, and the average price per unit."""
    subtotal = sum(line_total(i) for i in order["items"])
    units = sum(i["qty"] for i in order["items"])
    # Fixed: an empty order has no average price.
    average = subtotal / units if units else 0.0
    return {"order": order["id"], "total": round(subtotal * (1 + TAX_RATE), 2), "average": round(average, 2)}
