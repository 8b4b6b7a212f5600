"""Value objects a library user builds by hand (a policy, a task) refuse a bad field with a
typed Tally error of one line, as every other refusal does, instead of pydantic's report."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ModelWrapValidatorHandler, ValidationError, model_validator

from core.errors import InputError
from core.formats import validation_reason


class Refusing(BaseModel):
    """A model whose validation errors are raised as ``refusal`` (an InputError subclass)."""

    refusal: ClassVar[type[InputError]] = InputError
    noun: ClassVar[str | None] = None  # how the message names it (default: the class name)

    @model_validator(mode="wrap")
    @classmethod
    def _refuse(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        try:
            return handler(data)
        except ValidationError as err:
            noun = cls.noun or cls.__name__.lower()
            raise cls.refusal(f"bad {noun}: {validation_reason(err)}") from None
