"""What coordinator and nodes must agree on: the data standard, wire models, DP mechanisms
and signatures. This package imports nothing else from the repository.

Modules (private, re-exported here):

* data standard: code lists (``_codes``), countries (``_countries``), periods (``_periods``),
  units (``_units``), the reporting record (``_record``), declared coverage (``_coverage``);
* wire models of API v1 (``_wire``);
* DP mechanisms and error bars (``_dp``);
* Ed25519 signatures over canonical JSON (``_signing``);
* the exception hierarchy (``_errors``).
"""

from protocols._codes import (
    COMMODITIES,
    TRADE_FLOWS,
    Basis,
    Commodity,
    CommodityInfo,
    ContractType,
    Flow,
    Stage,
    commodity_info,
    parse_code,
)
from protocols._countries import all_country_codes, country_name, parse_country
from protocols._coverage import CoverageEntry, covers_slice
from protocols._dp import (
    FIXED_POINT_SCALE,
    LaplaceMechanism,
    from_fixed_point,
    laplace_interval_halfwidth,
    laplace_mechanism,
    laplace_std,
    to_fixed_point,
)
from protocols._errors import (
    InvalidPeriodError,
    PrivacyParameterError,
    ProtocolError,
    SignatureError,
    StandardError,
    UnitConversionError,
    UnknownCodeError,
    describe_validation_error,
)
from protocols._periods import Period, parse_period
from protocols._record import CountryCode, PeriodText, ReportingRecord
from protocols._secrets import check_secret_strength
from protocols._signing import (
    canonical_json,
    generate_private_key,
    key_id,
    load_private_key,
    private_key_pem,
    public_key_b64,
    sign,
    verify,
)
from protocols._units import MASS_UNITS, PRICE_UNITS, normalise_price, normalise_quantity
from protocols._wire import (
    API_VERSION,
    MAX_CELLS,
    AggregateQuery,
    Bounds,
    CellEstimate,
    Dimension,
    ErrorBody,
    Measure,
    NodeAnswer,
    NodeInfo,
    QueryKind,
    SignedAnswer,
)

__all__ = [
    "API_VERSION",
    "COMMODITIES",
    "FIXED_POINT_SCALE",
    "MASS_UNITS",
    "MAX_CELLS",
    "PRICE_UNITS",
    "TRADE_FLOWS",
    "AggregateQuery",
    "Basis",
    "Bounds",
    "CellEstimate",
    "Commodity",
    "CommodityInfo",
    "ContractType",
    "CountryCode",
    "CoverageEntry",
    "Dimension",
    "ErrorBody",
    "Flow",
    "InvalidPeriodError",
    "LaplaceMechanism",
    "Measure",
    "NodeAnswer",
    "NodeInfo",
    "Period",
    "PeriodText",
    "PrivacyParameterError",
    "ProtocolError",
    "QueryKind",
    "ReportingRecord",
    "SignatureError",
    "SignedAnswer",
    "Stage",
    "StandardError",
    "UnitConversionError",
    "UnknownCodeError",
    "all_country_codes",
    "canonical_json",
    "check_secret_strength",
    "commodity_info",
    "country_name",
    "covers_slice",
    "describe_validation_error",
    "from_fixed_point",
    "generate_private_key",
    "key_id",
    "laplace_interval_halfwidth",
    "laplace_mechanism",
    "laplace_std",
    "load_private_key",
    "normalise_price",
    "normalise_quantity",
    "parse_code",
    "parse_country",
    "parse_period",
    "private_key_pem",
    "public_key_b64",
    "sign",
    "to_fixed_point",
    "verify",
]
