"""The tasks ``toolgym/FunctionCall-v0`` ships: 30 hand-written questions over 12 domains.

Small and honest: each gold was written for its question, and ``validate_record`` checks it
against the tools (required parameters, types, enums) when the server loads it. They cover
single calls, parallel calls, duplicate calls (the same call twice), optional parameters left
out or given, enums, list arguments, distractor tools, and text answers (no fitting tool, a
missing required value, small talk). Split 20 train / 5 validation / 5 test.

Where the gold leaves a parameter out, the question does not state it; where the question
states a default value ("in Celsius"), the gold gives it. Some records declare ``slots``
(values ``variants`` may substitute, e.g. a city), where the alternatives are of the same kind.

Size: over 500 lines because it is the 30 records themselves, written out as data.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

__all__ = ["SYSTEM_PROMPT", "TOOLS", "builtin_records"]

SYSTEM_PROMPT = (
    "You are a helpful assistant with access to functions. When a function can do what the user "
    "asks, call it with the arguments the user gave; call several functions at once when the "
    "request needs several. Do not invent values the user did not give: if a required value is "
    "missing, ask for it. If no function fits, answer in plain text."
)


def _tool(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


def _s(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def _i(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "integer", "description": description, **extra}


def _n(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "number", "description": description, **extra}


TOOLS: dict[str, dict[str, Any]] = {
    t["function"]["name"]: t
    for t in [
        _tool(
            "get_weather",
            "Current weather in a city.",
            {
                "city": _s("City name, e.g. Paris."),
                "unit": _s("Temperature unit.", enum=["celsius", "fahrenheit"], default="celsius"),
            },
            ["city"],
        ),
        _tool(
            "get_forecast",
            "Daily weather forecast for a city.",
            {"city": _s("City name."), "days": _i("Number of days to forecast.", minimum=1, maximum=14)},
            ["city", "days"],
        ),
        _tool("add", "Add two numbers.", {"a": _n("First addend."), "b": _n("Second addend.")}, ["a", "b"]),
        _tool(
            "multiply",
            "Multiply two numbers.",
            {"a": _n("First factor."), "b": _n("Second factor.")},
            ["a", "b"],
        ),
        _tool(
            "convert_currency",
            "Convert an amount of money between currencies.",
            {
                "amount": _n("Amount to convert."),
                "from_currency": _s("ISO 4217 code of the source currency, e.g. USD."),
                "to_currency": _s("ISO 4217 code of the target currency, e.g. EUR."),
            },
            ["amount", "from_currency", "to_currency"],
        ),
        _tool(
            "get_stock_price",
            "Latest price of a stock.",
            {"symbol": _s("Ticker symbol, e.g. AAPL.")},
            ["symbol"],
        ),
        _tool(
            "create_event",
            "Create a calendar event.",
            {
                "title": _s("Event title."),
                "date": _s("Date, YYYY-MM-DD."),
                "time": _s("Start time, HH:MM (24-hour)."),
                "duration_minutes": _i("Length in minutes.", minimum=5, maximum=480, default=60),
                "attendees": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Attendee emails.",
                },
            },
            ["title", "date"],
        ),
        _tool(
            "send_email",
            "Send an email.",
            {
                "to": _s("Recipient address."),
                "subject": _s("Subject line."),
                "body": _s("Message text."),
                "cc": {"type": "array", "items": {"type": "string"}, "description": "Addresses to copy."},
            },
            ["to", "subject", "body"],
        ),
        _tool(
            "search_products",
            "Search the shop's catalog.",
            {
                "query": _s("Search terms."),
                "category": _s("Product category.", enum=["electronics", "books", "clothing", "home"]),
                "max_price": _n("Highest price in USD."),
                "sort_by": _s(
                    "Result order.",
                    enum=["relevance", "price_asc", "price_desc", "rating"],
                    default="relevance",
                ),
            },
            ["query"],
        ),
        _tool(
            "search_flights",
            "Search one-way flights.",
            {
                "origin": _s("IATA code of the departure airport."),
                "destination": _s("IATA code of the arrival airport."),
                "date": _s("Departure date, YYYY-MM-DD."),
                "passengers": _i("Number of passengers.", minimum=1, maximum=9, default=1),
                "cabin": _s(
                    "Cabin class.", enum=["economy", "premium", "business", "first"], default="economy"
                ),
            },
            ["origin", "destination", "date"],
        ),
        _tool(
            "book_hotel",
            "Book a hotel room.",
            {
                "city": _s("City name."),
                "check_in": _s("Check-in date, YYYY-MM-DD."),
                "check_out": _s("Check-out date, YYYY-MM-DD."),
                "guests": _i("Number of guests.", minimum=1, maximum=8, default=2),
            },
            ["city", "check_in", "check_out"],
        ),
        _tool(
            "roll_dice",
            "Roll one die and return the result.",
            {"sides": _i("Number of sides.", minimum=2, maximum=100, default=6)},
            [],
        ),
        _tool(
            "set_thermostat",
            "Set a room's thermostat.",
            {
                "room": _s("Room name."),
                "temperature": _n("Target temperature in Celsius."),
                "mode": _s("Operating mode.", enum=["heat", "cool", "auto"]),
            },
            ["room", "temperature"],
        ),
        _tool(
            "translate_text",
            "Translate text.",
            {
                "text": _s("Text to translate."),
                "target_language": _s("ISO 639-1 code of the target language, e.g. de."),
                "source_language": _s("ISO 639-1 code of the source language; detected when omitted."),
            },
            ["text", "target_language"],
        ),
        _tool(
            "find_restaurants",
            "Find restaurants.",
            {
                "city": _s("City name."),
                "cuisine": _s("Type of food, e.g. thai."),
                "price_level": _s("Price level.", enum=["cheap", "moderate", "expensive"]),
                "open_now": {"type": "boolean", "description": "Only places open now."},
            },
            ["city"],
        ),
        _tool(
            "convert_units",
            "Convert a quantity between units.",
            {
                "value": _n("Quantity."),
                "from_unit": _s("Unit to convert from."),
                "to_unit": _s("Unit to convert to."),
            },
            ["value", "from_unit", "to_unit"],
        ),
        _tool(
            "get_time",
            "Current time in a time zone.",
            {"timezone": _s("IANA time zone, e.g. Asia/Tokyo.")},
            ["timezone"],
        ),
    ]
}

_CITIES = ["Paris", "Tokyo", "Lima", "Nairobi", "Oslo", "Toronto", "Seoul", "Cairo"]


def _task(
    task_id: str,
    question: str,
    tools: list[str],
    gold: list[tuple[str, dict[str, Any]]] | None,
    slots: list[dict[str, Any]] | None = None,
    domain: str = "",
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": task_id,
        "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}],
        "tools": [copy.deepcopy(TOOLS[name]) for name in tools],
        "metadata": {"domain": domain, "source": "toolgym-builtin"},
    }
    if gold is None:
        record["gold_text"] = True
    else:
        record["gold_calls"] = [{"name": name, "arguments": args} for name, args in gold]
    if slots:
        record["slots"] = slots
    return record


def _city_slot(city: str, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"value": city, "alternatives": [c for c in _CITIES if c != city and c not in exclude]}


_TRAIN: list[dict[str, Any]] = [
    _task(
        "fc-weather-001",
        "What's the weather like in Paris right now?",
        ["get_weather", "get_forecast"],
        [("get_weather", {"city": "Paris"})],
        [_city_slot("Paris")],
        "weather",
    ),
    _task(
        "fc-weather-002",
        "How warm is it in Boston at the moment? Give it to me in fahrenheit.",
        ["get_weather", "get_time"],
        [("get_weather", {"city": "Boston", "unit": "fahrenheit"})],
        domain="weather",
    ),
    _task(
        "fc-weather-003",
        "Compare the current weather in London and Berlin for me.",
        ["get_weather", "get_forecast"],
        [("get_weather", {"city": "London"}), ("get_weather", {"city": "Berlin"})],
        domain="weather",
    ),
    _task(
        "fc-weather-004",
        "I'm going to Madrid. What's the forecast for the next 5 days?",
        ["get_weather", "get_forecast"],
        [("get_forecast", {"city": "Madrid", "days": 5})],
        domain="weather",
    ),
    _task(
        "fc-math-001",
        "What is 17 plus 25?",
        ["add", "multiply"],
        [("add", {"a": 17, "b": 25})],
        domain="math",
    ),
    _task(
        "fc-math-002",
        "Two things: what is 6 times 7, and what is 13 plus 8?",
        ["add", "multiply"],
        [("multiply", {"a": 6, "b": 7}), ("add", {"a": 13, "b": 8})],
        domain="math",
    ),
    _task(
        "fc-finance-001",
        "How much is 250 US dollars in euros?",
        ["convert_currency", "get_stock_price"],
        [("convert_currency", {"amount": 250, "from_currency": "USD", "to_currency": "EUR"})],
        domain="finance",
    ),
    _task(
        "fc-finance-002",
        "Get me the latest share prices of AAPL and MSFT.",
        ["get_stock_price", "convert_currency"],
        [("get_stock_price", {"symbol": "AAPL"}), ("get_stock_price", {"symbol": "MSFT"})],
        domain="finance",
    ),
    _task(
        "fc-calendar-001",
        "Put a 'Design review' on my calendar for 2025-03-14 at 15:00 "
        "with alice@example.com and bob@example.com.",
        ["create_event", "send_email"],
        [
            (
                "create_event",
                {
                    "title": "Design review",
                    "date": "2025-03-14",
                    "time": "15:00",
                    "attendees": ["alice@example.com", "bob@example.com"],
                },
            )
        ],
        domain="calendar",
    ),
    _task(
        "fc-email-001",
        "Email dana@example.com with the subject 'Invoice 4411' and the text 'The invoice is attached.'",
        ["send_email", "create_event"],
        [
            (
                "send_email",
                {"to": "dana@example.com", "subject": "Invoice 4411", "body": "The invoice is attached."},
            )
        ],
        domain="email",
    ),
    _task(
        "fc-shop-001",
        "Find wireless headphones in the electronics category for at most 80 dollars.",
        ["search_products"],
        [("search_products", {"query": "wireless headphones", "category": "electronics", "max_price": 80})],
        domain="shopping",
    ),
    _task(
        "fc-travel-001",
        "Search business class flights from SFO to JFK on 2025-06-02 for 2 passengers.",
        ["search_flights", "book_hotel"],
        [
            (
                "search_flights",
                {
                    "origin": "SFO",
                    "destination": "JFK",
                    "date": "2025-06-02",
                    "passengers": 2,
                    "cabin": "business",
                },
            )
        ],
        domain="travel",
    ),
    _task(
        "fc-travel-002",
        "Book a hotel in Lisbon from 2025-07-10 to 2025-07-14 for 3 guests.",
        ["book_hotel", "search_flights"],
        [
            (
                "book_hotel",
                {"city": "Lisbon", "check_in": "2025-07-10", "check_out": "2025-07-14", "guests": 3},
            )
        ],
        [{"value": "Lisbon", "alternatives": ["Porto", "Seville", "Naples", "Vienna"]}],
        "travel",
    ),
    _task(
        "fc-games-001",
        "Roll a 20-sided die two times.",
        ["roll_dice", "add"],
        [("roll_dice", {"sides": 20}), ("roll_dice", {"sides": 20})],
        domain="games",
    ),
    _task(
        "fc-text-001",
        "Can you order me a large pepperoni pizza for delivery?",
        ["get_weather", "get_time"],
        None,
        domain="text",
    ),
    _task(
        "fc-text-002", "Please book me a hotel room.", ["book_hotel", "search_flights"], None, domain="text"
    ),
    _task(
        "fc-home-001",
        "Set the bedroom thermostat to 19.5 degrees in heat mode.",
        ["set_thermostat"],
        [("set_thermostat", {"room": "bedroom", "temperature": 19.5, "mode": "heat"})],
        domain="smart-home",
    ),
    _task(
        "fc-lang-001",
        "Translate 'Where is the train station?' into German.",
        ["translate_text"],
        [("translate_text", {"text": "Where is the train station?", "target_language": "de"})],
        domain="language",
    ),
    _task(
        "fc-food-001",
        "Any cheap thai places in Chicago that are open now?",
        ["find_restaurants", "get_weather"],
        [
            (
                "find_restaurants",
                {"city": "Chicago", "cuisine": "thai", "price_level": "cheap", "open_now": True},
            )
        ],
        [{"value": "Chicago", "alternatives": ["Denver", "Austin", "Seattle", "Atlanta"]}],
        "food",
    ),
    _task(
        "fc-text-003",
        "Thanks, that's everything I needed!",
        ["get_weather", "send_email"],
        None,
        domain="text",
    ),
]

_VALIDATION: list[dict[str, Any]] = [
    _task(
        "fc-weather-005",
        "What's the temperature in Tokyo in celsius?",
        ["get_weather", "get_time"],
        [("get_weather", {"city": "Tokyo", "unit": "celsius"})],
        [_city_slot("Tokyo")],
        "weather",
    ),
    _task(
        "fc-units-001",
        "How many miles is 10 kilometers?",
        ["convert_units", "convert_currency"],
        [("convert_units", {"value": 10, "from_unit": "kilometers", "to_unit": "miles"})],
        domain="units",
    ),
    _task(
        "fc-weather-006",
        "What's the weather in Rome today, and the forecast for the next 3 days there?",
        ["get_weather", "get_forecast"],
        [("get_weather", {"city": "Rome"}), ("get_forecast", {"city": "Rome", "days": 3})],
        [{"value": "Rome", "alternatives": ["Athens", "Dublin", "Prague"]}],
        "weather",
    ),
    _task(
        "fc-text-004", "Who wrote the novel Moby-Dick?", ["search_products", "get_time"], None, domain="text"
    ),
    _task(
        "fc-games-002",
        "Roll a 12-sided die three times for me.",
        ["roll_dice"],
        [("roll_dice", {"sides": 12}), ("roll_dice", {"sides": 12}), ("roll_dice", {"sides": 12})],
        domain="games",
    ),
]

_TEST: list[dict[str, Any]] = [
    _task(
        "fc-travel-003",
        "Look up economy class flights from LHR to CDG on both 2025-05-01 and 2025-05-08.",
        ["search_flights", "book_hotel"],
        [
            (
                "search_flights",
                {"origin": "LHR", "destination": "CDG", "date": "2025-05-01", "cabin": "economy"},
            ),
            (
                "search_flights",
                {"origin": "LHR", "destination": "CDG", "date": "2025-05-08", "cabin": "economy"},
            ),
        ],
        domain="travel",
    ),
    _task(
        "fc-shop-002",
        "Search the books category for gardening, highest rated first.",
        ["search_products"],
        [("search_products", {"query": "gardening", "category": "books", "sort_by": "rating"})],
        domain="shopping",
    ),
    _task(
        "fc-calendar-002",
        "Schedule 'Team sync' on 2025-04-03 at 09:30 for 30 minutes.",
        ["create_event"],
        [
            (
                "create_event",
                {"title": "Team sync", "date": "2025-04-03", "time": "09:30", "duration_minutes": 30},
            )
        ],
        domain="calendar",
    ),
    _task("fc-text-005", "Convert some money for me, please.", ["convert_currency"], None, domain="text"),
    _task(
        "fc-time-001",
        "What time is it right now in Asia/Tokyo and in America/New_York?",
        ["get_time", "get_weather"],
        [("get_time", {"timezone": "Asia/Tokyo"}), ("get_time", {"timezone": "America/New_York"})],
        domain="time",
    ),
]


GENERATED_SEED = 0
GENERATED_COUNT = 200


@functools.lru_cache(maxsize=1)
def _generated() -> tuple[tuple[str, dict[str, Any]], ...]:
    """Single-step tasks from the tool-environment generator (query, tools, gold calls).

    Deterministic by seed; made once per process (about a second).
    """
    from toolgym.taskgen import single_step_tasks

    out = []
    for record in single_step_tasks(GENERATED_SEED, GENERATED_COUNT):
        split = record.pop("split")
        out.append((split, record))
    return tuple(out)


def builtin_records() -> list[tuple[str, dict[str, Any]]]:
    """``(split, record)`` pairs, fresh copies each call.

    The hand-written tasks, then ``GENERATED_COUNT`` tasks derived from the tool generator.
    """
    out: list[tuple[str, dict[str, Any]]] = []
    for split, records in (("train", _TRAIN), ("validation", _VALIDATION), ("test", _TEST)):
        out.extend((split, copy.deepcopy(r)) for r in records)
    out.extend((split, copy.deepcopy(r)) for split, r in _generated())
    return out
