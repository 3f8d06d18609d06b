"""``.proto`` source text of a ``FileDescriptorProto``: what ``protoc`` would read back as the
same descriptor, with the comments kept in its ``source_code_info``.

Protobuf's Python package prints no ``.proto`` text, and py-to-proto (Caikit's) drops
comments; the generated files are the only documentation a gRPC client reads, so this
printer keeps them. It covers what :mod:`deepaas_like.protos.model_protos` builds: proto3
messages (nested messages, maps, ``optional``, oneofs) and services (server streaming).
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf import descriptor_pb2

__all__ = ["proto_text"]

_INDENT = "  "
_Field = descriptor_pb2.FieldDescriptorProto
#: Scalar type -> its name in .proto text.
_SCALAR_NAMES = {
    value: name[len("TYPE_") :].lower()
    for name, value in _Field.Type.items()
    if name not in ("TYPE_MESSAGE", "TYPE_ENUM", "TYPE_GROUP")
}


def proto_text(file: descriptor_pb2.FileDescriptorProto) -> str:
    """The ``.proto`` source of ``file``: header comment, syntax, package, imports, services,
    then messages."""
    return _Printer(file).text()


class _Printer:
    def __init__(self, file: descriptor_pb2.FileDescriptorProto) -> None:
        self.file = file
        self.comments = {tuple(location.path): location.leading_comments for location in file.source_code_info.location}
        # Names protoc resolves relative type names against: messages, and packages.
        self.aggregates: set[str] = set()
        self._collect(file.message_type, file.package)
        for name in [file.package] + [field.type_name[1:] for field in self._all_fields()]:
            parts = name.split(".")
            self.aggregates.update(".".join(parts[: end + 1]) for end in range(len(parts)))
        self.lines: list[str] = []

    def text(self) -> str:
        self._comment((12,), 0)
        self.lines.append(f'syntax = "{self.file.syntax or "proto2"}";')
        self.lines += ["", f"package {self.file.package};", ""]
        self.lines += [f'import "{dependency}";' for dependency in self.file.dependency]
        for index, service in enumerate(self.file.service):
            self.lines.append("")
            self._service(service, (6, index))
        for index, message in enumerate(self.file.message_type):
            self.lines.append("")
            self._message(message, (4, index), self.file.package, 0)
        return "\n".join(self.lines) + "\n"

    def _collect(self, messages: Iterable[descriptor_pb2.DescriptorProto], scope: str) -> None:
        for message in messages:
            name = f"{scope}.{message.name}"
            self.aggregates.add(name)
            self._collect(message.nested_type, name)

    def _all_fields(self) -> list[_Field]:
        found: list[_Field] = []
        pending = list(self.file.message_type)
        while pending:
            message = pending.pop()
            found += [field for field in message.field if field.type_name]
            pending += message.nested_type
        return found

    def _comment(self, path: tuple[int, ...], depth: int) -> None:
        text = self.comments.get(path)
        if text:
            for line in text.rstrip("\n").split("\n"):
                self.lines.append(f"{_INDENT * depth}//{line}".rstrip())

    def _service(self, service: descriptor_pb2.ServiceDescriptorProto, path: tuple[int, ...]) -> None:
        self._comment(path, 0)
        self.lines.append(f"service {service.name} {{")
        scope = self.file.package
        for index, method in enumerate(service.method):
            self._comment((*path, 2, index), 1)
            request = ("stream " if method.client_streaming else "") + self._type(method.input_type, scope)
            response = ("stream " if method.server_streaming else "") + self._type(method.output_type, scope)
            self.lines.append(f"{_INDENT}rpc {method.name}({request}) returns ({response});")
        self.lines.append("}")

    def _message(self, message: descriptor_pb2.DescriptorProto, path: tuple[int, ...], scope: str, depth: int) -> None:
        indent = _INDENT * depth
        full_name = f"{scope}.{message.name}"
        entries = {f".{full_name}.{nested.name}": nested for nested in message.nested_type if nested.options.map_entry}
        self._comment(path, depth)
        self.lines.append(f"{indent}message {message.name} {{")
        # Nested messages first: protoc then numbers them as the descriptor does, before the
        # map entries it makes as it reads the fields.
        for index, nested in enumerate(message.nested_type):
            if not nested.options.map_entry:
                self._message(nested, (*path, 3, index), full_name, depth + 1)
        oneofs: dict[int, list[tuple[int, _Field]]] = {}
        for index, field in enumerate(message.field):
            if field.HasField("oneof_index") and not field.proto3_optional:
                oneofs.setdefault(field.oneof_index, []).append((index, field))
            else:
                self._field(field, (*path, 2, index), full_name, entries, depth + 1)
        for oneof_index, members in oneofs.items():
            self.lines.append(f"{indent}{_INDENT}oneof {message.oneof_decl[oneof_index].name} {{")
            for index, field in members:
                self._field(field, (*path, 2, index), full_name, entries, depth + 2)
            self.lines.append(f"{indent}{_INDENT}}}")
        self.lines.append(f"{indent}}}")

    def _field(
        self,
        field: _Field,
        path: tuple[int, ...],
        scope: str,
        entries: dict[str, descriptor_pb2.DescriptorProto],
        depth: int,
    ) -> None:
        self._comment(path, depth)
        entry = entries.get(field.type_name)
        if entry is not None:
            key, value = entry.field
            kind = f"map<{self._kind(key, scope)}, {self._kind(value, scope)}>"
        else:
            label = "repeated " if field.label == _Field.LABEL_REPEATED else ""
            kind = label + ("optional " if field.proto3_optional else "") + self._kind(field, scope)
        self.lines.append(f"{_INDENT * depth}{kind} {field.name} = {field.number};")

    def _kind(self, field: _Field, scope: str) -> str:
        if field.type in (_Field.TYPE_MESSAGE, _Field.TYPE_ENUM):
            return self._type(field.type_name, scope)
        return _SCALAR_NAMES[field.type]

    def _type(self, type_name: str, scope: str) -> str:
        """The shortest name of ``type_name`` (``.pkg.Message``) that protoc resolves to it from
        ``scope``: it looks the first part up in ``scope``, then in each enclosing scope."""
        target = type_name.lstrip(".")
        parts = target.split(".")
        for start in range(len(parts) - 1, -1, -1):
            candidate = parts[start:]
            if self._resolve(candidate, scope) == target:
                return ".".join(candidate)
        return type_name

    def _resolve(self, parts: list[str], scope: str) -> str | None:
        scopes = scope.split(".")
        for end in range(len(scopes), -1, -1):
            first = ".".join([*scopes[:end], parts[0]])
            if first in self.aggregates:
                return ".".join([*scopes[:end], *parts])
        return None
