from typing import Any

from django.http import HttpRequest

from console.roles import Role, request_role


def role(request: HttpRequest) -> dict[str, Any]:
    """Expose the user's role to templates (``is_admin``/``is_operator`` gate controls)."""
    current = request_role(request) if hasattr(request, "user") else Role.NONE
    return {"role": current.label, "is_admin": current >= Role.ADMIN, "is_operator": current >= Role.OPERATOR}
