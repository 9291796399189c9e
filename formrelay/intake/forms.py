"""Form specs from the config turned into WTForms classes, and server-side validation.

Allow-list validation only: each configured field has its type, length or range and
choices checked; uploads are checked by extension *and* by their first bytes and get a
server-made name; anything posted that the form does not declare is refused. Messages
come translated (Dutch or English). WTForms works on plain mappings, so this module
needs no Flask request: `validate()` takes the posted fields and files as plain
mappings of lists (`Fields`, `Files`); a file is anything with a name, a content type
and a seekable stream (`PostedFile`: werkzeug's FileStorage is one, `File` another).
"""

from __future__ import annotations

import io
import re
import unicodedata
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import IO, Any, Protocol

import wtforms
from markupsafe import Markup
from wtforms import validators as v
from wtforms import widgets
from wtforms.fields.choices import SelectChoice

from ..i18n import translations
from ..settings import UPLOAD_TYPES, FieldSpec, FormSpec
from .addresses import HeaderSafe
from .submission import Answer, Upload
from .texts import choice_pairs
from .texts import text as localized


class PostedFile(Protocol):
    """A file as posted. Its stream is read in place (seek, tell, the first bytes), never
    copied whole: the relay streams it into gpg."""

    @property
    def filename(self) -> str | None: ...

    @property
    def content_type(self) -> str | None: ...

    @property
    def stream(self) -> IO[bytes]: ...


@dataclass(frozen=True)
class File:
    """A `PostedFile` made by hand (the CLI, tests)."""

    filename: str | None
    content_type: str | None
    stream: IO[bytes]


# Posted text fields and files: each name with its values in the order sent (a checkbox
# group, several files, or a field posted twice has more than one).
Fields = Mapping[str, list[str]]
Files = Mapping[str, Sequence[PostedFile]]


class _FormData(dict[str, list[Any]]):
    """The multi-value mapping WTForms asks for (it reads values with `getlist`)."""

    def getlist(self, key: str) -> list[Any]:
        return list(self.get(key, []))


# Posted names that are not answers: form token, honeypot, copy tick (with the copy's
# e-mail address and the patient's own OpenPGP key, see patient_copy/copies.py), language.
CONTROL_FIELDS = frozenset({"_token", "_hp", "_copy", "_lang", "_js", "_copy_email", "_copy_key"})

def sniff_upload(ext: str, head: bytes) -> bool:
    """Do the first bytes of a file match what its extension claims?"""
    ext = ext.lower()
    if ext == "pdf":
        return head.startswith(b"%PDF-")
    if ext == "png":
        return head.startswith(b"\x89PNG\r\n\x1a\n")
    if ext in ("jpg", "jpeg"):
        return head.startswith(b"\xff\xd8\xff")
    if ext == "gif":
        return head[:6] in (b"GIF87a", b"GIF89a")
    if ext == "heic":
        return head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"msf1")
    if ext in ("docx", "odt"):
        return head.startswith(b"PK\x03\x04")
    if ext == "txt":
        if b"\x00" in head:
            return False
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:  # a multi-byte character cut at the end is fine
            return exc.start >= len(head) - 3
        return True
    return False


def safe_filename(name: str, ext: str, fallback: str) -> str:
    """A server-made file name: the original stem, reduced to harmless characters."""
    stem = name.rsplit(".", 1)[0] if "." in name else name
    stem = unicodedata.normalize("NFC", stem.replace("\\", "/").rsplit("/", 1)[-1])
    stem = re.sub(r"[^\w\- ]+", "", stem, flags=re.UNICODE).strip(" .-_")[:60]
    return f"{stem or fallback}.{ext.lower()}"


# -- validators ------------------------------------------------------------------------
def bsn_is_valid(value: str) -> bool:
    """The Dutch citizen number's 11-check (elfproef): 9 digits, weights 9..2 and -1."""
    if not re.fullmatch(r"\d{9}", value) or value == "000000000":
        return False
    digits = [int(c) for c in value]
    total = sum(d * w for d, w in zip(digits[:8], range(9, 1, -1), strict=True)) - digits[8]
    return total % 11 == 0


class Bsn:
    def __call__(self, form: wtforms.Form, fld: wtforms.Field) -> None:
        value = re.sub(r"[\s.\-]", "", fld.data or "")
        if value and not bsn_is_valid(value):
            raise v.ValidationError(fld.gettext("This is not a valid citizen service number "
                                                "(BSN): check the 9 digits."))
        fld.data = value


class NotInFuture:
    def __call__(self, form: wtforms.Form, fld: wtforms.Field) -> None:
        if fld.data and fld.data > date.today():
            raise v.ValidationError(fld.gettext("A date of birth cannot be in the future."))
        if fld.data and fld.data.year < 1900:
            raise v.ValidationError(fld.gettext("Please check the year of birth."))


class Ticked:
    """A consent box must be ticked (InputRequired's own message is not translated)."""

    def __call__(self, form: wtforms.Form, fld: wtforms.Field) -> None:
        if not fld.data:
            raise v.StopValidation(fld.gettext("Please tick this box to continue."))


class Phone:
    def __call__(self, form: wtforms.Form, fld: wtforms.Field) -> None:
        if fld.data and not re.fullmatch(r"\+?[0-9][0-9 ()\-]{5,19}", fld.data.strip()):
            raise v.ValidationError(fld.gettext("Enter a phone number, e.g. 020 123 4567."))


class ReadableText:
    """Werkzeug replaces bytes that are not UTF-8 with U+FFFD; refuse rather than store
    a silently damaged answer."""

    def __call__(self, form: wtforms.Form, fld: wtforms.Field) -> None:
        values = fld.data if isinstance(fld.data, list) else [fld.data]
        if any(isinstance(x, str) and ("\ufffd" in x or "\x00" in x) for x in values):
            raise v.ValidationError(fld.gettext("This answer contains characters that could "
                                                "not be read; please type it again."))


@dataclass(frozen=True)
class UploadCheck:
    """Checks a file field's uploads; the ones that pass go to the form instance's
    `uploads` (the validator itself keeps nothing: its form class serves every post)."""

    spec: FieldSpec

    def __call__(self, form: wtforms.Form, fld: wtforms.Field) -> None:
        files = [f for f in (fld.raw_data or []) if getattr(f, "filename", None)]
        if not files:
            if self.spec.required:
                raise v.StopValidation(fld.gettext("Please add a file."))
            return
        for i, storage in enumerate(files, start=1):
            name = storage.filename or ""
            ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
            allowed = self.spec.upload_types
            stream: IO[bytes] = storage.stream
            stream.seek(0, io.SEEK_END)
            size = stream.tell()
            stream.seek(0)
            head = stream.read(32)
            stream.seek(0)
            if ext not in allowed:
                raise v.ValidationError(fld.gettext("This file type is not allowed; use %(types)s.")
                                        % {"types": ", ".join(allowed)})
            if not sniff_upload(ext, head):
                raise v.ValidationError(fld.gettext("This file is not a real %(type)s file.")
                                        % {"type": ext.upper()})
            if size > self.spec.max_size_mb * 1024 * 1024:
                raise v.ValidationError(fld.gettext("This file is larger than %(mb)s MB.")
                                        % {"mb": self.spec.max_size_mb})
            if size == 0:
                raise v.ValidationError(fld.gettext("This file is empty."))
            form.uploads.setdefault(self.spec.name, []).append(Upload(
                field=self.spec.name,
                filename=safe_filename(name, ext, f"{self.spec.name}-{i}"),
                content_type=UPLOAD_TYPES[ext], size=size, stream=stream))


# -- form classes ----------------------------------------------------------------------
class CheckboxesField(wtforms.SelectMultipleField):
    widget = widgets.ListWidget(prefix_label=False)
    option_widget = widgets.CheckboxInput()


class BaseForm(wtforms.Form):
    class Meta:
        locales = ["nl"]

        def get_translations(self, form: wtforms.Form) -> Any:
            return translations(self.locales[0])

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.uploads: dict[str, list[Upload]] = {}  # field name -> the files that passed


def _field(spec: FieldSpec, lang: str) -> wtforms.Field:
    req: list[Any] = [v.InputRequired()] if spec.required else [v.Optional()]
    text = [ReadableText()]
    kw: dict[str, Any] = {"label": localized(spec, "label", lang),
                          "description": localized(spec, "help", lang)}
    limit = v.Length(min=spec.min_length or -1, max=spec.text_limit)
    t = spec.type
    if t == "text":
        return wtforms.StringField(validators=[*req, limit, *text], **kw)
    if t == "textarea":
        return wtforms.TextAreaField(validators=[*req, limit, *text], **kw)
    if t == "email":
        return wtforms.EmailField(
            validators=[*req, v.Length(max=254), v.Email(), HeaderSafe(), *text], **kw)
    if t == "tel":
        return wtforms.TelField(validators=[*req, Phone()], **kw)
    if t == "bsn":
        return wtforms.StringField(validators=[*req, Bsn()], **kw)
    if t == "date":
        return wtforms.DateField(validators=[*req], **kw)
    if t == "birthdate":
        return wtforms.DateField(validators=[*req, NotInFuture()], **kw)
    if t == "number":
        rng = v.NumberRange(min=spec.min, max=spec.max)
        return wtforms.DecimalField(validators=[*req, rng], **kw)
    # the value posted and stored is the canonical choice; the patient reads their language
    choices = [SelectChoice(value, shown) for value, shown in choice_pairs(spec, lang)]
    if t == "select":
        # An empty first option, selected until the patient chooses: a skipped question
        # sends no answer (and a required one is refused) instead of the first choice.
        choose = SelectChoice("", translations(lang).gettext("Choose…"))
        return wtforms.SelectField(choices=[choose, *choices], default="",
                                   validators=[*req, *text], **kw)
    if t == "radio":
        return wtforms.RadioField(choices=choices, validators=[*req], **kw)
    if t == "checkboxes":
        return CheckboxesField(choices=choices, validators=[*req], **kw)
    if t == "consent":
        return wtforms.BooleanField(validators=[Ticked()], **kw)
    if t == "file":
        return wtforms.MultipleFileField(validators=[UploadCheck(spec)], **kw)
    raise ValueError(f"unknown field type {t}")




# (id of a FormSpec, language) -> its form class. A configuration's FormSpec objects
# live as long as it is in force; a reload makes new ones, and the classes of the old
# ones are forgotten when those are collected.
_CLASSES: dict[tuple[int, str], type[BaseForm]] = {}


def form_class(spec: FormSpec, lang: str) -> type[BaseForm]:
    """The WTForms class of a form in a language, built once per configuration: building
    it (every field and validator) cost more than validating a post with it."""
    key = (id(spec), lang)
    cls = _CLASSES.get(key)
    if cls is None:
        meta = type("Meta", (BaseForm.Meta,), {"locales": [lang]})
        attrs: dict[str, Any] = {"Meta": meta}
        for f in spec.fields:
            attrs[f.name] = _field(f, lang)
        cls = type(f"Form_{spec.id}", (BaseForm,), attrs)
        if not any(k[0] == key[0] for k in list(_CLASSES)):
            weakref.finalize(spec, _forget, key[0])
        _CLASSES[key] = cls
    return cls


def _forget(spec_id: int) -> None:
    for key in [k for k in list(_CLASSES) if k[0] == spec_id]:
        _CLASSES.pop(key, None)


def empty_form(spec: FormSpec, lang: str, data: Fields | None = None) -> BaseForm:
    """An unvalidated form for rendering, optionally filled with earlier answers."""
    return form_class(spec, lang)(formdata=_FormData(data) if data else None)


@dataclass
class Result:
    form: BaseForm
    errors: dict[str, list[str]]
    answers: list[Answer]
    uploads: list[Upload]

    @property
    def ok(self) -> bool:
        return not self.errors


def validate(spec: FormSpec, lang: str, formdata: Fields, files: Files) -> Result:
    """Check a post against the form's allow-list; answers and uploads if it passes."""
    cls = form_class(spec, lang)
    gettext = translations(lang).gettext
    known = {f.name for f in spec.fields}
    unknown = sorted({k for k in [*formdata.keys(), *files.keys()]
                      if k not in known and k not in CONTROL_FIELDS})
    combined = _FormData()
    for key, values in formdata.items():
        if key in known and values:
            combined.setdefault(key, []).extend(values)
    for key, posted in files.items():
        if key in known and posted:
            combined.setdefault(key, []).extend(posted)
    form = cls(formdata=combined)
    form.validate()
    errors: dict[str, list[str]] = {k: list(map(str, e)) for k, e in form.errors.items()}
    if unknown:
        errors["_form"] = [gettext("The form contained fields it does not have (%(names)s); "
                                   "please reload the page and send again.")
                           % {"names": ", ".join(unknown[:5])}]
    for f in spec.fields:  # a field (or a checkbox's choice) posted twice is never an answer
        sent = list(formdata.get(f.name, []))
        twice = len(set(sent)) < len(sent) if f.type == "checkboxes" else len(sent) > 1
        if f.type != "file" and twice:
            errors.setdefault(f.name, []).append(gettext("This answer was sent twice."))
    if errors:
        return Result(form, errors, [], [])
    answers = [_answer(f, form[f.name].data, lang) for f in spec.fields if f.type != "file"]
    files_out = [u for f in spec.fields for u in form.uploads.get(f.name, [])]
    for f in spec.fields:
        if f.type == "file":
            names = [u.filename for u in files_out if u.field == f.name]
            answers.append(Answer(f.name, f.label, "file", names))
    return Result(form, {}, answers, files_out)


def _answer(spec: FieldSpec, data: Any, lang: str) -> Answer:
    if spec.type == "consent":
        # true, whatever language the patient read it in: the exact consent text is the
        # (canonical) label, and the submission records the language that was shown.
        value: str | list[str] | bool = bool(data)
    elif spec.type == "checkboxes":
        value = list(data or [])
    elif data is None:
        value = ""
    elif isinstance(data, date):
        value = data.isoformat()
    else:
        value = str(data).strip() if not isinstance(data, str) else data.strip()
    return Answer(spec.name, spec.label, spec.type, value)


def describe(field: wtforms.Field) -> Markup:
    """The help text, escaped (labels and help come from the config, never the patient)."""
    return Markup.escape(field.description or "")


def field_attrs(spec: FieldSpec, described: list[str], error: Any) -> dict[str, Any]:
    """HTML attributes of a field's input: id, hints, limits, error state."""
    attrs: dict[str, Any] = {"id": f"f-{spec.name}"}
    if spec.required or spec.type == "consent":  # a consent must always be ticked
        attrs.update({"required": True, "aria-required": "true"})
    if described:
        attrs["aria-describedby"] = " ".join(described)
    if error:
        attrs["aria-invalid"] = "true"
    if spec.autocomplete:
        attrs["autocomplete"] = spec.autocomplete
    if spec.type in ("text", "textarea", "email"):
        attrs["maxlength"] = spec.text_limit
    if spec.type == "bsn":
        attrs.update({"inputmode": "numeric", "maxlength": 11})
    if spec.type == "number":
        attrs["step"] = "any"
        if spec.min is not None:
            attrs["min"] = spec.min
        if spec.max is not None:
            attrs["max"] = spec.max
    if spec.type == "file":
        attrs["accept"] = ",".join(f".{a}" for a in spec.upload_types)
    return attrs
