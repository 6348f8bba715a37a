"""The google.rpc message classes: Status, ErrorInfo, RetryInfo, BadRequest.

googleapis-common-protos (which grpcio-status depends on) installs the same
messages as the module google.rpc. Protobuf keeps one descriptor per proto
file name in a process, so when that module is importable it is used, and
the package's own generated copy is used only when it is not.
"""

try:
    from google.rpc import code_pb2  # noqa: F401
    from google.rpc import error_details_pb2  # noqa: F401
    from google.rpc import status_pb2  # noqa: F401
except ImportError:
    from ._proto.google_rpc import code_pb2  # noqa: F401
    from ._proto.google_rpc import error_details_pb2  # noqa: F401
    from ._proto.google_rpc import status_pb2  # noqa: F401
