"""The settings of the ``auth`` policy, validated when the config is loaded.

They live apart from the request-time code (:mod:`.policy`), which is compiled with mypyc, and
mypyc cannot compile pydantic models. The checks of the sections its methods need are
:mod:`.checks`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from portico.config.model import NAME_PATTERN
from portico.identity.authn import auth_method

__all__ = ["AuthSettings", "ScopeRule"]


def _check_method(method: str) -> str:
    base, sep, provider = method.partition(":")
    if sep and not provider:
        raise ValueError(f"{method!r} needs a name after the colon, for example jwt:okta")
    if provider and base != "jwt":
        raise ValueError(f"only jwt takes a provider name ({method!r})")
    if base == "jwt" and not provider:
        raise ValueError("jwt needs the identity provider's name: jwt:<provider>")
    auth_method(method)  # ExtensionUnavailable (a ValueError) for unknown or missing methods
    return method


MethodName = Annotated[str, AfterValidator(_check_method)]
TenantName = Annotated[str, Field(pattern=NAME_PATTERN)]


def _scope_list(value: object) -> object:
    # `scopes: [a, b]` is short for `scopes: {all_of: [a, b]}`.
    return {"all_of": value} if isinstance(value, list | tuple) else value


class ScopeRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    all_of: tuple[str, ...] = ()
    """Every one of these scopes is needed."""
    any_of: tuple[str, ...] = ()
    """At least one of these scopes is needed."""


class AuthSettings(BaseModel):
    """Settings of the ``auth`` policy. Keys other than these are options of one listed method
    (``api_key: {header: X-Partner-Key}``), validated by that method."""

    model_config = ConfigDict(extra="allow", frozen=True)
    methods: tuple[MethodName, ...] = Field(min_length=1)
    scopes: Annotated[ScopeRule, BeforeValidator(_scope_list)] = ScopeRule()
    tenants: tuple[TenantName, ...] = ()
    """When given, only consumers of these tenants may use the route."""

    @model_validator(mode="after")
    def _methods_and_options(self) -> AuthSettings:
        if len(set(self.methods)) != len(self.methods):
            raise ValueError("a method is listed twice in methods")
        errors = []
        for name in self.model_extra or {}:
            try:
                self.options_for(name)
            except ValueError as exc:
                errors.append(str(exc))
        if errors:
            raise ValueError("; ".join(errors))
        return self

    def options_for(self, method: str) -> BaseModel | None:
        """The validated options of ``method`` (by its listed name, or the part before ``:``),
        ``None`` when the route gives none."""
        extra = self.model_extra or {}
        names = [n for n in (method, method.partition(":")[0]) if n in extra]
        if not names:
            return None
        key = names[0]
        if key not in self.methods and not any(m.partition(":")[0] == key for m in self.methods):
            listed = ", ".join(self.methods)
            raise ValueError(f"{key!r} is neither a setting of auth nor a listed method ({listed})")
        model = auth_method(key).options
        if model is None:
            raise ValueError(f"method {key!r} takes no options")
        try:
            return model.model_validate(extra[key])
        except ValidationError as exc:
            messages = [
                f"{'.'.join(str(part) for part in (key, *error['loc']))}: {error['msg']}"
                for error in exc.errors()
            ]
            raise ValueError("; ".join(messages)) from None
