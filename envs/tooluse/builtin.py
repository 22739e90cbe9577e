"""A small, hand-written set of ToolUse tasks: three per FTRL question type.

They are about a fictional world, so a model cannot answer from memory and must call the
tools. Each carries its ``reference_solution`` (the calls, turn by turn). The generator
(``toolgym.taskgen``) makes thousands more; these exist so the demo and the tests
have something real and readable.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["builtin_tasks"]

SYSTEM = (
    "You are a helpful assistant that answers questions by calling tools. Call tools with"
    " <tool_call>{\"name\": ..., \"arguments\": {...}}</tool_call> blocks; you may call several"
    " in one turn. When you know the answer, reply with it in plain text and no tool call."
)


def _tool(name: str, description: str, params: dict[str, tuple[str, str]], required: list[str],
          enums: dict[str, list[str]] | None = None) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for pname, (ptype, pdesc) in params.items():
        props[pname] = {"type": ptype, "description": pdesc}
        if enums and pname in enums:
            props[pname]["enum"] = enums[pname]
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": props, "required": required}}}


# --- tool sources (stdlib only; each validates its input and never echoes it) ---------------
CITY_INFO = '''
CITIES = {
    "varnholt": {"population": 48210, "country": "Eskara", "founded": 1184},
    "tessaly bay": {"population": 9317, "country": "Mirelund", "founded": 1702},
    "kor avun": {"population": 211554, "country": "Eskara", "founded": 902},
    "lindqvist": {"population": 30871, "country": "Oradel", "founded": 1455},
}

def get_city_info(city: str) -> dict:
    if not isinstance(city, str):
        raise TypeError("city must be a string")
    data = CITIES.get(city.strip().lower())
    if data is None:
        raise ValueError("unknown city")
    return dict(data)
'''

CONVERT = '''
RATES = {"ZEL": 1.0, "ORM": 0.37, "KAV": 2.5}

def convert_currency(amount: float, source: str, target: str) -> str:
    if not isinstance(amount, (int, float)) or isinstance(amount, bool):
        raise TypeError("amount must be a number")
    if source not in RATES or target not in RATES:
        raise ValueError("unsupported currency; use ZEL, ORM or KAV")
    value = amount * RATES[source] / RATES[target]
    return "%.2f %s" % (value, target)
'''

MOUNTAIN = '''
MOUNTAINS = {
    "mount teryn": {"elevation_m": 3120, "range": "Ashen Spine"},
    "mount oskol": {"elevation_m": 2875, "range": "Ashen Spine"},
    "pellmar peak": {"elevation_m": 4406, "range": "Gray Teeth"},
}

def get_mountain(name: str) -> dict:
    if not isinstance(name, str):
        raise TypeError("name must be a string")
    data = MOUNTAINS.get(name.strip().lower())
    if data is None:
        raise ValueError("no such mountain")
    return dict(data)
'''

WEATHER = '''
WEATHER = {"varnholt": ("sleet", -3), "lindqvist": ("clear", 14), "kor avun": ("fog", 6)}

def get_weather(city: str, unit: str = "celsius") -> str:
    if unit not in ("celsius", "fahrenheit"):
        raise ValueError("unit must be celsius or fahrenheit")
    entry = WEATHER.get(str(city).strip().lower())
    if entry is None:
        raise ValueError("no weather station there")
    sky, temp = entry
    if unit == "fahrenheit":
        temp = round(temp * 9 / 5 + 32)
    return "%s, %d degrees %s" % (sky, temp, unit)
'''

TIMEZONE = '''
ZONES = {"varnholt": "UTC+2", "lindqvist": "UTC-4", "tessaly bay": "UTC+9"}

def get_timezone(city: str) -> str:
    zone = ZONES.get(str(city).strip().lower())
    if zone is None:
        raise ValueError("unknown city")
    return zone
'''

MANUFACTURER = '''
PRODUCTS = {"halcyon drone": "Brightwell Dynamics", "quill tablet": "Orrin Labs", "ember kettle": "Sable & Finch"}

def find_manufacturer(product: str) -> str:
    maker = PRODUCTS.get(str(product).strip().lower())
    if maker is None:
        raise ValueError("product not found")
    return maker
'''

COMPANY = '''
COMPANIES = {
    "brightwell dynamics": {"founder": "Imara Solberg", "headquarters": "Kor Avun", "founded": 1998},
    "orrin labs": {"founder": "Tobias Venn", "headquarters": "Lindqvist", "founded": 2011},
    "sable & finch": {"founder": "Greta Halloway", "headquarters": "Varnholt", "founded": 1967},
}

def get_company(company: str, field: str = "founder") -> str:
    data = COMPANIES.get(str(company).strip().lower())
    if data is None:
        raise ValueError("company not found")
    if field not in data:
        raise ValueError("field must be founder, headquarters or founded")
    return str(data[field])
'''

AUTHOR = '''
BOOKS = {"the glass orchard": "Nadia Krell", "salt meridian": "Osei Farrow", "a lantern for wolves": "Nadia Krell"}

def find_author(title: str) -> str:
    author = BOOKS.get(str(title).strip().lower())
    if author is None:
        raise ValueError("no book with that title")
    return author
'''

PERSON = '''
PEOPLE = {
    "nadia krell": {"born_in": "Tessaly Bay", "born": 1961, "nationality": "Mirelund"},
    "osei farrow": {"born_in": "Lindqvist", "born": 1979, "nationality": "Oradel"},
    "imara solberg": {"born_in": "Varnholt", "born": 1970, "nationality": "Eskara"},
    "tobias venn": {"born_in": "Kor Avun", "born": 1985, "nationality": "Eskara"},
    "greta halloway": {"born_in": "Varnholt", "born": 1931, "nationality": "Mirelund"},
}

def get_person(name: str) -> dict:
    data = PEOPLE.get(str(name).strip().lower())
    if data is None:
        raise ValueError("no record of that person")
    return dict(data)
'''

STOCK = '''
def get_stock_price(ticker: str) -> str:
    prices = {"BWD": 41.2, "ORL": 17.85}
    if ticker not in prices:
        raise ValueError("unknown ticker")
    return "%.2f" % prices[ticker]
'''

T_CITY = _tool("get_city_info", "Facts about a city: population, country, year founded.",
               {"city": ("string", "The city's name.")}, ["city"])
T_CONVERT = _tool("convert_currency", "Convert an amount between currencies at today's rate.",
                  {"amount": ("number", "How much."), "source": ("string", "Currency code to convert from."),
                   "target": ("string", "Currency code to convert to.")}, ["amount", "source", "target"],
                  {"source": ["ZEL", "ORM", "KAV"], "target": ["ZEL", "ORM", "KAV"]})
T_MOUNTAIN = _tool("get_mountain", "Elevation (m) and range of a mountain.",
                   {"name": ("string", "The mountain's name.")}, ["name"])
T_WEATHER = _tool("get_weather", "Current weather in a city.",
                  {"city": ("string", "The city."), "unit": ("string", "celsius (default) or fahrenheit.")},
                  ["city"], {"unit": ["celsius", "fahrenheit"]})
T_TIMEZONE = _tool("get_timezone", "The time zone of a city.", {"city": ("string", "The city.")}, ["city"])
T_MAKER = _tool("find_manufacturer", "Which company makes a product.",
                {"product": ("string", "The product's name.")}, ["product"])
T_COMPANY = _tool("get_company", "One fact about a company.",
                  {"company": ("string", "The company."),
                   "field": ("string", "founder (default), headquarters or founded.")},
                  ["company"], {"field": ["founder", "headquarters", "founded"]})
T_AUTHOR = _tool("find_author", "Who wrote a book.", {"title": ("string", "The book's title.")}, ["title"])
T_PERSON = _tool("get_person", "Birth place, birth year and nationality of a person.",
                 {"name": ("string", "Full name.")}, ["name"])
T_STOCK = _tool("get_stock_price", "Latest share price for a ticker.", {"ticker": ("string", "Ticker.")}, ["ticker"])

SOURCES = {
    "get_city_info": CITY_INFO, "convert_currency": CONVERT, "get_mountain": MOUNTAIN, "get_weather": WEATHER,
    "get_timezone": TIMEZONE, "find_manufacturer": MANUFACTURER, "get_company": COMPANY,
    "find_author": AUTHOR, "get_person": PERSON, "get_stock_price": STOCK,
}


def _task(task_id: str, qtype: str, question: str, tools: list[dict[str, Any]], unsolved: dict[str, list[str]],
          answer: str, solution: list[list[dict[str, Any]]]) -> dict[str, Any]:
    names = [t["function"]["name"] for t in tools]
    return {
        "id": task_id,
        "question_type": qtype,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
        "tools": tools,
        "codes": {n: SOURCES[n].strip() + "\n" for n in names},
        "answer": answer,
        "unsolved_set": unsolved,
        "reference_solution": solution,
    }


def _call(name: str, /, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


def builtin_tasks() -> list[tuple[str, dict[str, Any]]]:
    """The hand-written ToolUse tasks, as ``(split, record)`` pairs with their golds and reference solutions."""
    tasks = [
        ("train", _task("tu-single-1", "single_hop", "What is the population of Varnholt?",
                        [T_CITY, T_STOCK], {"get_city_info": ["48210"]}, "48210",
                        [[_call("get_city_info", city="Varnholt")]])),
        ("train", _task("tu-single-2", "single_hop", "How many KAV is 250 ZEL worth today?",
                        [T_CONVERT, T_CITY], {"convert_currency": ["100.00 KAV"]}, "100",
                        [[_call("convert_currency", amount=250, source="ZEL", target="KAV")]])),
        ("test", _task("tu-single-3", "single_hop", "In which mountain range is Pellmar Peak?",
                       [T_MOUNTAIN], {"get_mountain": ["Gray Teeth"]}, "Gray Teeth",
                       [[_call("get_mountain", name="Pellmar Peak")]])),
        ("train", _task("tu-parallel-1", "parallel_single_hop",
                        "What are the elevations, in metres, of Mount Teryn and Mount Oskol?",
                        [T_MOUNTAIN, T_CITY], {"get_mountain": ["3120", "2875"]}, "3120, 2875",
                        [[_call("get_mountain", name="Mount Teryn"), _call("get_mountain", name="Mount Oskol")]])),
        ("train", _task("tu-parallel-2", "parallel_single_hop",
                        "What is the weather in Lindqvist right now, and what time zone is Tessaly Bay in?",
                        [T_WEATHER, T_TIMEZONE, T_STOCK], {"get_weather": ["clear"], "get_timezone": ["UTC+9"]},
                        "clear, UTC+9",
                        [[_call("get_weather", city="Lindqvist"), _call("get_timezone", city="Tessaly Bay")]])),
        ("validation", _task("tu-parallel-3", "parallel_single_hop",
                             "Which countries are Kor Avun and Lindqvist in?",
                             [T_CITY], {"get_city_info": ["Eskara", "Oradel"]}, "Eskara, Oradel",
                             [[_call("get_city_info", city="Kor Avun"), _call("get_city_info", city="Lindqvist")]])),
        ("train", _task("tu-multi-1", "multi_hop", "Who founded the company that makes the Halcyon drone?",
                        [T_MAKER, T_COMPANY, T_PERSON],
                        {"find_manufacturer": ["Brightwell Dynamics"], "get_company": ["Imara Solberg"]},
                        "Imara Solberg",
                        [[_call("find_manufacturer", product="Halcyon drone")],
                         [_call("get_company", company="Brightwell Dynamics", field="founder")]])),
        ("train", _task("tu-multi-2", "multi_hop", "In which city was the author of 'Salt Meridian' born, and how"
                        " many people live there?",
                        [T_AUTHOR, T_PERSON, T_CITY],
                        {"find_author": ["Osei Farrow"], "get_person": ["Lindqvist"], "get_city_info": ["30871"]},
                        "Lindqvist, 30871",
                        [[_call("find_author", title="Salt Meridian")], [_call("get_person", name="Osei Farrow")],
                         [_call("get_city_info", city="Lindqvist")]])),
        ("test", _task("tu-multi-3", "multi_hop",
                       "What is the weather like in the city where the maker of the Ember kettle has its headquarters?",
                       [T_MAKER, T_COMPANY, T_WEATHER],
                       {"find_manufacturer": ["Sable & Finch"], "get_company": ["Varnholt"], "get_weather": ["sleet"]},
                       "sleet",
                       [[_call("find_manufacturer", product="Ember kettle")],
                        [_call("get_company", company="Sable & Finch", field="headquarters")],
                        [_call("get_weather", city="Varnholt")]])),
        ("train", _task("tu-pmulti-1", "parallel_multi_hop",
                        "In which years were the authors of 'The Glass Orchard' and 'Salt Meridian' born?",
                        [T_AUTHOR, T_PERSON, T_CITY],
                        {"find_author": ["Nadia Krell", "Osei Farrow"], "get_person": ["1961", "1979"]},
                        "1961, 1979",
                        [[_call("find_author", title="The Glass Orchard"), _call("find_author", title="Salt Meridian")],
                         [_call("get_person", name="Nadia Krell"), _call("get_person", name="Osei Farrow")]])),
        ("train", _task("tu-pmulti-2", "parallel_multi_hop",
                        "Where are the headquarters of the makers of the Quill tablet and the Halcyon drone?",
                        [T_MAKER, T_COMPANY, T_STOCK],
                        {"find_manufacturer": ["Orrin Labs", "Brightwell Dynamics"],
                         "get_company": ["Lindqvist", "Kor Avun"]},
                        "Lindqvist, Kor Avun",
                        [[_call("find_manufacturer", product="Quill tablet"),
                          _call("find_manufacturer", product="Halcyon drone")],
                         [_call("get_company", company="Orrin Labs", field="headquarters"),
                          _call("get_company", company="Brightwell Dynamics", field="headquarters")]])),
        ("validation", _task("tu-pmulti-3", "parallel_multi_hop",
                             "What nationality are the founders of Orrin Labs and Sable & Finch?",
                             [T_COMPANY, T_PERSON],
                             {"get_company": ["Tobias Venn", "Greta Halloway"], "get_person": ["Eskara", "Mirelund"]},
                             "Eskara, Mirelund",
                             [[_call("get_company", company="Orrin Labs"),
                               _call("get_company", company="Sable & Finch")],
                              [_call("get_person", name="Tobias Venn"), _call("get_person", name="Greta Halloway")]])),
    ]
    return [(split, json.loads(json.dumps(record))) for split, record in tasks]
