"""A deterministic simulation of Lumi Tea 茶光, a Taiwanese tea-and-skincare brand, as Segment messages.

The brand runs a LINE official account (with LIFF pages), a WeCom advisor channel for mainland
customers and a web shop. Customers arrive through ads, offline QR codes, friend referrals, search
and KOLs; browse anonymously, follow, click the rich menu, send keyword messages, fill in surveys,
book tastings, buy, review, refund, refer friends, and most of them eventually fall silent.

The behaviour is a BG/NBD-style process, so the analytics have something real to find: each
customer has a gamma-distributed visit rate that decays with age, and after every visit drops out
with a beta-distributed probability; a loyal minority drops out rarely and buys often. Sales days
(618, 雙11, 雙12) and the monthly member day raise both traffic and conversion.

Customers are simulated one by one in arrival order, each with its own seeded RNG, so the same
seed gives the same events, and every message has a deterministic ``messageId``: sending the
history twice stores it once.
"""

from __future__ import annotations

import bisect
import math
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from hashlib import blake2b
from itertools import accumulate
from typing import Any, NamedTuple

import numpy as np

BRAND = "Lumi Tea 茶光"
SHOP = "https://shop.lumitea.example"
LIBRARY = {"name": "lifeloop-demo", "version": "1.0"}
DAY_MS = 86_400_000
# Asia/Taipei and Asia/Shanghai are both UTC+8 all year round (no daylight saving).
LOCAL_OFFSET = timedelta(hours=8)
SOURCES = ("ad", "qr_offline", "friend_referral", "search", "kol")
DORMANT_DAYS = 30


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    name: str
    category: str
    price: int  # TWD
    slug: str

    def properties(self, quantity: int = 1) -> dict[str, Any]:
        return {
            "product_id": self.id,
            "sku": self.id,
            "name": self.name,
            "category": self.category,
            "price": self.price,
            "quantity": quantity,
            "currency": "TWD",
        }


CATALOGUE = (
    Product("TEA-DD01", "凍頂烏龍茶 Dong Ding Oolong 150g", "tea", 680, "dong-ding-oolong"),
    Product("TEA-OB02", "東方美人茶 Oriental Beauty 100g", "tea", 980, "oriental-beauty"),
    Product("TEA-AL03", "阿里山高山茶 Alishan High Mountain 150g", "tea", 1200, "alishan-high-mountain"),
    Product("TEA-SM04", "日月潭紅玉紅茶 Sun Moon Lake Ruby 100g", "tea", 550, "sun-moon-lake-ruby"),
    Product("TEA-OS05", "桂花烏龍冷泡茶包 Osmanthus Oolong Cold Brew", "tea", 390, "osmanthus-cold-brew"),
    Product("TEA-GB06", "茶光四季禮盒 Four Seasons Gift Box", "tea", 1880, "four-seasons-gift-box"),
    Product("SKN-GC01", "綠茶淨透潔顏慕斯 Green Tea Cleansing Mousse", "skincare", 680, "green-tea-mousse"),
    Product("SKN-OS02", "烏龍保濕精華液 Oolong Hydrating Serum 30ml", "skincare", 1480, "oolong-serum"),
    Product("SKN-WM03", "白茶舒緩面膜 White Tea Soothing Mask ×5", "skincare", 520, "white-tea-mask"),
    Product("SKN-BE04", "紅茶緊緻眼霜 Black Tea Firming Eye Cream", "skincare", 1280, "black-tea-eye-cream"),
    Product("SKN-CH05", "苦茶油護手霜 Camellia Hand Cream", "skincare", 350, "camellia-hand-cream"),
    Product("SKN-TK06", "茶光旅行組 Lumi Travel Kit", "skincare", 890, "lumi-travel-kit"),
    Product("ACC-TP01", "手作陶瓷茶壺 Handmade Ceramic Teapot", "teaware", 1680, "ceramic-teapot"),
    Product("ACC-CB02", "冷泡隨行瓶 Cold Brew Bottle", "teaware", 650, "cold-brew-bottle"),
)
_TEA = [p for p in CATALOGUE if p.category != "skincare"]
_SKIN = [p for p in CATALOGUE if p.category == "skincare"]

# LINE rich menu (item id, label); the WeCom advisor menu reuses the ids with simplified labels.
MENU_ITEMS = (
    ("offers", "最新優惠"),
    ("shop", "線上商城"),
    ("booking", "預約品茶"),
    ("member", "會員中心"),
    ("quiz", "肌膚測驗"),
    ("stores", "門市資訊"),
)
_MENU_WEIGHTS = (30, 25, 12, 15, 10, 8)

# keyword → example texts, per locale; texts without a keyword match are small talk.
KEYWORDS: dict[str, dict[str, list[str]]] = {
    "zh-TW": {
        "預約": ["我想預約週六的品茶體驗", "請問可以預約肌膚諮詢嗎?"],
        "優惠": ["最近有什麼優惠嗎?", "會員日有折扣嗎"],
        "價格": ["東方美人茶的價格是多少?", "精華液多少錢?"],
        "會員": ["怎麼加入會員?", "我的會員點數還有多少"],
        "門市": ["台北門市在哪裡?", "門市營業到幾點?"],
        "禮盒": ["四季禮盒還有貨嗎?", "想訂 10 盒禮盒送客戶"],
    },
    "zh-CN": {
        "预约": ["我想预约周六的品茶体验", "可以预约皮肤咨询吗?"],
        "优惠": ["最近有什么优惠吗?", "会员日有折扣吗"],
        "价格": ["东方美人茶多少钱?", "精华液的价格是多少?"],
        "会员": ["怎么成为会员?", "我的积分还有多少"],
        "礼盒": ["四季礼盒还有货吗?", "想订 10 盒礼盒"],
    },
    "en": {
        "booking": ["Can I book a tea tasting on Saturday?", "I'd like to book a skin consultation"],
        "discount": ["Any discount this week?", "Is there a member day discount?"],
        "price": ["How much is the Oriental Beauty tea?", "What's the price of the serum?"],
        "member": ["How do I become a member?", "How many points do I have?"],
    },
}
SMALL_TALK = {
    "zh-TW": ["謝謝!", "好的👌", "收到", "哈囉"],
    "zh-CN": ["谢谢", "好的", "收到"],
    "en": ["thanks!", "ok 👍"],
}
_BOOKING_KEYWORD = {"zh-TW": "預約", "zh-CN": "预约", "en": "booking"}

SURVEYS = ("skin_type_quiz", "tea_taste_profile", "member_day_feedback", "nps_after_order")
_SKIN_TYPES = ("dry", "oily", "combination", "sensitive", "normal")
_TEA_TASTES = ("light_floral", "roasted", "fruity", "black_tea", "cold_brew")
_BOOKINGS = (
    ("預約品茶體驗 Tea Tasting", "tea-tasting"),
    ("預約肌膚諮詢 Skin Consultation", "skin-consultation"),
)
_INFO_PAGES = (
    ("首頁 Home", "/", "home"),
    ("品牌故事 Our Story", "/story", "content"),
    ("門市資訊 Stores", "/stores", "store"),
)

_REFERRERS = {
    "ad": ("https://www.facebook.com/", "facebook", "cpc"),
    "search": ("https://www.google.com/", "google", "organic"),
    "kol": ("https://www.instagram.com/", "instagram", "kol"),
    "friend_referral": ("https://line.me/", "line", "referral"),
    "qr_offline": ("", "store_qr", "offline"),
}
_ENTRY_PAGES = {
    "ad": "lp_ad_{campaign}",
    "qr_offline": "store_counter_{city}",
    "friend_referral": "invite_friend",
    "search": "web_footer_banner",
    "kol": "kol_live_{campaign}",
}
_IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15"
_USER_AGENTS = {
    "web": (
        f"{_IPHONE} Version/17.5 Mobile Safari/604.1",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/126.0 Mobile Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
    ),
    "liff": (f"{_IPHONE} Line/14.10.0 LIFF",),
    "wechat": (f"{_IPHONE} MicroMessenger/8.0.49",),
}


def _words(table: str) -> tuple[tuple[str, ...], ...]:
    """A compact table: rows separated by commas, columns by spaces."""
    return tuple(tuple(row.split()) for row in table.split(","))


# People. Romanised forms make e-mail addresses; the domains are reserved example domains on purpose.
_TW_SURNAMES = _words(
    "陳 chen, 林 lin, 黃 huang, 張 chang, 李 lee, 王 wang, 吳 wu, 劉 liu, 蔡 tsai, 楊 yang, 許 hsu, 鄭 cheng"
)
_TW_GIVEN = _words(
    "怡君 yichun female, 雅婷 yating female, 佩珊 peishan female, 詩涵 shihhan female, 欣怡 hsinyi female, "
    "宜蓁 yichen female, 思妤 szuyu female, 志明 chihming male, 家豪 chiahao male, 冠宇 kuanyu male, "
    "承恩 chengen male, 俊傑 chunchieh male"
)
_CN_SURNAMES = _words("王 wang, 李 li, 张 zhang, 刘 liu, 陈 chen, 杨 yang, 赵 zhao, 黄 huang, 周 zhou, 吴 wu")
_CN_GIVEN = _words(
    "芳 fang female, 静 jing female, 婷婷 tingting female, 子涵 zihan female, 雨桐 yutong female, "
    "欣然 xinran female, 伟 wei male, 磊 lei male, 浩然 haoran male, 俊杰 junjie male"
)
_EN_GIVEN = _words(
    "Emily female, Grace female, Vivian female, Irene female, Joanne female, Sophie female, "
    "Kevin male, Jason male, Eric male, Leo male"
)
_DOMAINS = ("example.com", "example.net", "example.org")
_CITIES = {
    "tw": (
        ("Taipei", 34),
        ("New Taipei", 18),
        ("Taichung", 15),
        ("Kaohsiung", 12),
        ("Tainan", 8),
        ("Taoyuan", 8),
        ("Hsinchu", 5),
    ),
    "cn": (("Shanghai", 40), ("Shenzhen", 20), ("Hangzhou", 15), ("Beijing", 15), ("Xiamen", 10)),
}
_PAYMENT = {
    "tw": ("credit_card", "line_pay", "jko_pay", "apple_pay"),
    "cn": ("alipay", "wechat_pay", "credit_card"),
}
_TIERS = ((10_000, "gold"), (3_000, "silver"))
# Local-time hour weights: lunch break and evening peaks, quiet nights.
_HOUR_WEIGHTS = (3, 2, 1, 1, 1, 1, 3, 7, 10, 10, 11, 13, 20, 19, 12, 11, 11, 12, 14, 20, 23, 24, 19, 10)
_HOUR_CUM = list(accumulate(_HOUR_WEIGHTS))


class _Event(NamedTuple):
    """One simulated message, compact until it is rendered as a Segment dict."""

    ts: int  # epoch milliseconds, UTC
    customer: int
    seq: int
    kind: str  # track, page or identify
    name: str  # track event or page name; "" for identify
    body: dict[str, Any]  # properties, or traits for identify
    via: str  # web, liff, line, wecom or server
    known: bool  # the customer had identified (has a userId) when this happened


@dataclass(slots=True)
class Customer:
    """One simulated person: who they are, how they tend to behave, and what they ended up doing."""

    index: int
    user_id: str
    anonymous_id: str
    region: str  # tw or cn
    locale: str
    timezone: str
    city: str
    source: str
    channel: str | None  # line, wecom, or None for web-only shoppers
    channel_id: str | None
    traits: dict[str, Any]
    arrival: int
    web_first: bool = True
    loyal: bool = False
    rate: float = 0.1  # visits per day at the start
    drop: float = 0.2  # probability of dropping out after a visit
    tau: float = 30.0  # days for the visit rate to decay by 1/e
    buy: float = 0.2  # propensity to put things in the cart
    spend: float = 1.0  # basket size multiplier
    tea_lover: float = 0.5  # share of attention on tea over skincare
    referrer: Customer | None = None
    identified_at: int | None = None
    anonymous_events: int = 0  # events sent before the customer identified
    events: int = 0
    orders: int = 0
    revenue: float = 0.0
    followed: bool = False
    unfollowed: bool = False
    last_event: int = 0
    contexts: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def email(self) -> str | None:
        return self.traits.get("email")


@dataclass(frozen=True, slots=True)
class SimulationSummary:
    """Counts that show the history is lifelike: who identified, bought, came back or went quiet."""

    customers: int
    events: int
    by_event: dict[str, int]
    identified: int
    anonymous_then_identified: int
    followers: int
    unfollowed: int
    buyers: int
    repeat_buyers: int
    dormant: int
    revenue_twd: int
    first: datetime | None
    last: datetime | None


@dataclass(frozen=True, slots=True)
class _World:
    """The calendar of the simulated history: local (UTC+8) days up to ``end``."""

    seed: int
    end_ms: int
    dates: list[date]
    midnights: list[int]  # epoch ms of each local day's 00:00
    season: list[float]
    season_max: float
    peaks: list[int]  # days of the big sales (6/18, 11/11), when lapsed customers may come back

    @property
    def days(self) -> int:
        return len(self.dates)

    def day_of(self, ts: int) -> int:
        return bisect.bisect_right(self.midnights, ts) - 1


def _season(day: date) -> float:
    """How busy a day is compared to an ordinary weekday."""
    boost = 1.0
    if day.month == 6 and day.day <= 18:  # 618 mid-year sale
        boost = 3.0 if day.day == 18 else 1.5
    elif (day.month == 10 and day.day >= 25) or (day.month == 11 and day.day <= 11):  # 雙11
        boost = 4.0 if (day.month, day.day) == (11, 11) else 1.6
    elif day.month == 12 and day.day <= 12:  # 雙12
        boost = 2.2 if day.day == 12 else 1.2
    if day.day == 8:  # monthly member day
        boost = max(boost, 1.8)
    return boost * (1.12 if day.weekday() >= 5 else 1.0)


def _campaign(day: date) -> tuple[str, str, str | None, int]:
    """The campaign running on ``day``: page name, slug, coupon code and its discount (TWD)."""
    if day.month == 6 and day.day <= 18:
        return "618 年中慶 Mid-Year Sale", "618-mid-year-sale", "618-150", 150
    if (day.month == 10 and day.day >= 25) or (day.month == 11 and day.day <= 11):
        return "雙11 茶光節 Double 11", "double-11", "DOUBLE11-200", 200
    if day.month == 12 and day.day <= 12:
        return "雙12 感恩回饋 Double 12", "double-12", "DOUBLE12-120", 120
    if 7 <= day.day <= 9:
        return "會員日 每月8號 Member Day", "member-day", "MEMBERDAY-100", 100
    rotating = (
        ("新品上市 桂花烏龍冷泡 New Cold Brew", "new-osmanthus-cold-brew"),
        ("找到你的茶系保養 Skin Quiz", "skin-quiz"),
        ("門市品茶體驗 Tea Tasting", "tea-tasting-event"),
    )
    name, slug = rotating[day.toordinal() // 14 % len(rotating)]
    return name, slug, None, 0


def _make_world(days: int, seed: int, end: datetime | None) -> _World:
    end = end or datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    last_local = (end + LOCAL_OFFSET).date()
    dates = [last_local - timedelta(days=days - 1 - k) for k in range(days)]
    midnights = [_epoch_ms(datetime.combine(d, datetime.min.time(), UTC) - LOCAL_OFFSET) for d in dates]
    season = [_season(d) for d in dates]
    peaks = [k for k, d in enumerate(dates) if (d.month, d.day) in ((6, 18), (11, 11))]
    return _World(seed, _epoch_ms(end), dates, midnights, season, max(season), peaks)


def _epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts / 1000, UTC).isoformat(timespec="milliseconds")


def _hex(seed: int, *parts: object, length: int = 32) -> str:
    text = ":".join(map(str, (seed, *parts)))
    return blake2b(text.encode(), digest_size=16).hexdigest()[:length]


def _unique_digits(index: int, width: int) -> str:
    """Random-looking digits, different for every customer: two people never share a phone number."""
    # An odd multiplier not divisible by 5 is coprime to 10**width, so index -> digits is one-to-one.
    return f"{(index * 2_654_435_761 + 12_345_678) % 10**width:0{width}d}"


def _person(rnd: random.Random, region: str, locale: str, index: int) -> dict[str, Any]:
    """Name, e-mail, phone, city, birthday and gender, consistent with region and locale."""
    if region == "cn":
        (family, family_latin), (given, given_latin, gender) = rnd.choice(_CN_SURNAMES), rnd.choice(_CN_GIVEN)
        phone = f"+86 1{rnd.choice('3589')}{_unique_digits(index, 9)}"
    else:
        (family, family_latin), (given, given_latin, gender) = rnd.choice(_TW_SURNAMES), rnd.choice(_TW_GIVEN)
        phone = f"+886 9{_unique_digits(index, 8)}"
    name = family + given
    local_part = f"{given_latin}.{family_latin}"
    if locale == "en" or rnd.random() < 0.2:  # many Taiwanese use an English first name
        given_en, gender = rnd.choice(_EN_GIVEN)
        name = f"{given_en} {family_latin.capitalize()}"
        local_part = f"{given_en.lower()}.{family_latin}"
    cities = _CITIES[region]
    city = rnd.choices([c for c, _ in cities], weights=[w for _, w in cities])[0]
    birthday = date(rnd.randint(1965, 2004), rnd.randint(1, 12), rnd.randint(1, 28))
    traits: dict[str, Any] = {"name": name, "gender": gender, "city": city}
    if rnd.random() < 0.88:
        traits["email"] = f"{local_part}{index}@{rnd.choice(_DOMAINS)}"
    if rnd.random() < 0.9:
        traits["phone"] = phone
    if rnd.random() < 0.7:
        traits["birthday"] = birthday.isoformat()
    return traits


def _population(customers: int, world: _World) -> list[Customer]:
    """Everyone's traits and tendencies, drawn as arrays so the population is one deterministic draw."""
    rng = np.random.default_rng([world.seed, customers, world.days])
    n = customers
    region = np.where(rng.random(n) < 0.8, "tw", "cn")
    source = rng.choice(SOURCES, size=n, p=[0.32, 0.16, 0.14, 0.26, 0.12])
    loyal = rng.random(n) < np.where(np.isin(source, ["friend_referral", "qr_offline"]), 0.2, 0.12)
    tendencies = {
        "loyal": loyal,
        "rate": rng.gamma(1.3, 0.175, n) * np.where(loyal, 2.5, 1.0),
        "drop": np.where(loyal, rng.beta(1.0, 45.0, n), rng.beta(2.0, 11.0, n)),
        "tau": np.where(loyal, rng.lognormal(np.log(150), 0.4, n), rng.lognormal(np.log(18), 0.6, n)),
        "buy": np.where(loyal, rng.beta(4.0, 5.0, n), rng.beta(1.4, 7.0, n)),
        "spend": rng.gamma(5.0, 0.2, n),
        "tea_lover": rng.beta(2.0, 2.0, n),
    }
    # Arrivals grow over time and bunch up on campaign days.
    weights = np.array(world.season) * np.linspace(0.7, 1.3, world.days)
    arrival_day = rng.choice(world.days, size=n, p=weights / weights.sum())
    channel_draw = rng.random(n)
    web_first_draw = rng.random(n)
    population = []
    for i in range(n):
        rnd = random.Random(world.seed * 1_000_003 + i)
        channel = _channel(str(region[i]), str(source[i]), float(channel_draw[i]))
        customer = _customer(i, rnd, world, str(region[i]), str(source[i]), channel, int(arrival_day[i]))
        customer.web_first = channel is None or web_first_draw[i] < _WEB_FIRST[customer.source]
        for name, values in tendencies.items():
            setattr(customer, name, values[i].item())
        population.append(customer)
    return population


_WEB_FIRST = {"ad": 0.75, "search": 0.95, "kol": 0.6, "friend_referral": 0.35, "qr_offline": 0.05}


def _channel(region: str, source: str, draw: float) -> str | None:
    """The customer's own channel with the brand; a QR code or an invite is always a channel follow."""
    needs_channel = source in ("qr_offline", "friend_referral")
    if region == "cn":
        return "wecom" if draw < 0.8 or needs_channel else None
    if draw < 0.8:
        return "line"
    return "wecom" if draw < 0.85 else "line" if needs_channel else None


def _customer(
    i: int, rnd: random.Random, world: _World, region: str, source: str, channel: str | None, day: int
) -> Customer:
    """Identity and personal data; behavioural tendencies are filled in by ``_population``."""
    if region == "tw":
        locale = "en" if rnd.random() < 0.08 else "zh-TW"
    else:
        locale = "en" if rnd.random() < 0.04 else "zh-CN"
    channel_id = None
    if channel == "line":
        channel_id = "U" + _hex(world.seed, "line", i)
    elif channel == "wecom":
        channel_id = "wm" + _hex(world.seed, "wecom", i, length=30)
    token = _hex(world.seed, "anon", i)
    traits = _person(rnd, region, locale, i)
    return Customer(
        index=i,
        user_id=f"LM{i + 1:06d}",
        anonymous_id=f"{token[:8]}-{token[8:12]}-4{token[13:16]}-a{token[17:20]}-{token[20:32]}",
        region=region,
        locale=locale,
        timezone="Asia/Shanghai" if region == "cn" else "Asia/Taipei",
        city=traits["city"],
        source=source,
        channel=channel,
        channel_id=channel_id,
        traits=traits,
        arrival=_arrival(world, day, rnd),
    )


def _time_on(world: _World, day: int, rnd: random.Random, after: int = 0) -> int:
    """A moment on local ``day`` at a typical hour and later than ``after``; may fall past the end."""
    hour = bisect.bisect_right(_HOUR_CUM, rnd.random() * _HOUR_CUM[-1])
    ts = world.midnights[day] + hour * 3_600_000 + rnd.randrange(3_600_000)
    if ts <= after:
        ts = after + rnd.randint(20, 180) * 60_000
    return ts


def _arrival(world: _World, day: int, rnd: random.Random) -> int:
    ts = _time_on(world, day, rnd)
    if ts > world.end_ms:  # the last day is cut short at ``end``
        ts = world.midnights[day] + int(rnd.random() * (world.end_ms - world.midnights[day]))
    return ts


class _Life:
    """Plays out one customer's history, appending to ``out``."""

    def __init__(self, c: Customer, world: _World, out: list[_Event], rnd: random.Random) -> None:
        self.c, self.world, self.out, self.rnd = c, world, out, rnd
        self.seq = 0
        self.ts = c.arrival
        self.cart: list[Product] = []
        self.tier = "regular"

    # -- recording ------------------------------------------------------------------------------

    @property
    def known(self) -> bool:
        return self.c.identified_at is not None

    def emit(self, kind: str, name: str, body: dict[str, Any], via: str, at: int | None = None) -> bool:
        """Record a message now (or at ``at``); returns False when that is past the end of the history."""
        ts = self.ts if at is None else at
        if at is None:
            self.ts += self.rnd.randint(15, 150) * 1000
        if ts > self.world.end_ms:
            return False
        known = self.known or kind == "identify"  # identify is what carries the userId
        self.out.append(_Event(ts, self.c.index, self.seq, kind, name, body, via, known))
        self.seq += 1
        self.c.events += 1
        self.c.last_event = max(self.c.last_event, ts)
        if not known:
            self.c.anonymous_events += 1
        return True

    def track(
        self, event: str, properties: dict[str, Any], via: str | None = None, at: int | None = None
    ) -> bool:
        return self.emit("track", event, properties, via or self.chat_via, at)

    def page(self, name: str, category: str, path: str, extra: dict[str, Any] | None = None) -> None:
        props = {
            "name": name,
            "category": category,
            "path": path,
            "url": SHOP + path,
            "title": f"{name} | {BRAND}",
        }
        self.emit("page", name, {**props, **(extra or {})}, self.page_via)

    @property
    def chat_via(self) -> str:
        return self.c.channel or "web"

    @property
    def page_via(self) -> str:
        # Followers of the LINE account mostly open the shop inside LINE (LIFF).
        if self.c.followed and not self.c.unfollowed and self.c.channel == "line" and self.rnd.random() < 0.6:
            return "liff"
        return "web"

    @property
    def day(self) -> date:
        return self.world.dates[self.world.day_of(self.ts)]

    # -- a life ---------------------------------------------------------------------------------

    def live(self) -> None:
        self.first_visit()
        while self.rnd.random() >= self.c.drop:
            start = self.next_visit()
            if start is None:
                return  # still active when the history ends
            self.ts = start
            self.visit()
        self.after_dropout()

    def next_visit(self) -> int | None:
        """The next visit, by thinning a Poisson process whose rate decays with age and follows the season."""
        world, c = self.world, self.c
        position = (self.ts - world.midnights[0]) / DAY_MS
        while True:
            position += self.rnd.expovariate(c.rate * world.season_max)
            day = int(position)
            if day >= world.days:
                return None
            age = position - (c.arrival - world.midnights[0]) / DAY_MS
            decay = 0.3 + 0.7 * math.exp(-age / c.tau)
            if self.rnd.random() < world.season[day] / world.season_max * decay:
                start = _time_on(world, day, self.rnd, after=self.ts)
                return start if start <= world.end_ms else None

    def first_visit(self) -> None:
        c, rnd = self.c, self.rnd
        if c.web_first:
            self.landing()
            self.browse()
            if c.channel and rnd.random() < 0.4:
                self.follow()
        else:
            if c.source == "friend_referral":
                code = f"LUMI{c.referrer.index:05d}" if c.referrer else "LUMI"
                self.page("邀請好友 Invite a Friend", "campaign", f"/invite/{code}")
            self.follow()
            for _ in range(rnd.randint(1, 3)):
                self.menu_click()
        signup = {"friend_referral": 0.65, "qr_offline": 0.45}.get(c.source, 0.05)
        if c.channel and c.followed and rnd.random() < signup:
            self.identify()

    def visit(self) -> None:
        c, rnd = self.c, self.rnd
        if not c.followed or c.unfollowed:
            self.browse(campaign=rnd.random() < 0.25)
            if c.channel and not c.followed and rnd.random() < 0.2:
                self.follow()
            return
        sale = self.world.season[self.world.day_of(self.ts)] > 1.4
        kinds = ("menu", "keyword", "browse", "booking", "survey", "push")
        weights = (30, 14, 34, 7, 4, 30 if sale else 10)
        getattr(self, f"visit_{rnd.choices(kinds, weights)[0]}")()

    def after_dropout(self) -> None:
        """Some dropouts block the account; some come back once for a big sale."""
        c, rnd, world = self.c, self.rnd, self.world
        if c.followed and rnd.random() < 0.3:
            at = self.ts + int(rnd.uniform(1, 25) * DAY_MS)
            if self.track("Channel Unfollowed", {"channel": c.channel}, at=at):
                c.unfollowed = True
        for day in world.peaks:
            if world.midnights[day] >= self.ts + 14 * DAY_MS and rnd.random() < (0.35 if c.loyal else 0.15):
                self.ts = _time_on(world, day, rnd, after=self.ts)
                self.browse(campaign=True, boost=1.5)

    # -- visits ---------------------------------------------------------------------------------

    def visit_menu(self) -> None:
        for _ in range(self.rnd.choices((1, 2, 3, 4), (40, 30, 20, 10))[0]):
            self.menu_click()

    def visit_keyword(self) -> None:
        keyword = self.message()
        if keyword in ("預約", "预约", "booking"):
            self.visit_booking(asked=True)
        elif keyword is not None and self.rnd.random() < 0.5:
            self.browse()

    def visit_browse(self) -> None:
        self.browse()

    def visit_push(self) -> None:
        """A broadcast message brought them to the campaign page."""
        self.browse(campaign=True)

    def visit_booking(self, asked: bool = False) -> None:
        name, slug = _BOOKINGS[0] if self.rnd.random() < self.c.tea_lover else _BOOKINGS[1]
        for step in ("", "/time")[: self.rnd.randint(1, 2)]:
            self.page(name, "booking", f"/booking/{slug}{step}")
        if not asked and self.rnd.random() < 0.4:
            self.message(keyword=_BOOKING_KEYWORD[self.c.locale])
        if self.rnd.random() < 0.5:
            self.page(name, "booking", f"/booking/{slug}/confirm")
            self.identify()  # the booking form asks for a phone number

    def visit_survey(self) -> None:
        self.survey(self.rnd.choice(SURVEYS[:3]))
        if not self.known and self.rnd.random() < 0.4:
            self.identify()

    # -- building blocks ------------------------------------------------------------------------

    def follow(self) -> None:
        c = self.c
        template = _ENTRY_PAGES[c.source]
        entry = template.format(campaign=_campaign(self.day)[1], city=c.city.lower().replace(" ", "_"))
        props: dict[str, Any] = {"channel": c.channel, "source": c.source, "entry_page": entry}
        if c.channel == "wecom":
            props["advisor_id"] = f"adv_{c.index % 12 + 1:02d}"
        if self.track("Channel Followed", props):
            c.followed = True

    def menu_click(self) -> None:
        c, rnd = self.c, self.rnd
        item, label = rnd.choices(MENU_ITEMS, _MENU_WEIGHTS)[0]
        menu = {"menu": f"{c.channel}_main", "item": item, "label": label, "channel": c.channel}
        self.track("Menu Clicked", menu)
        if item == "offers" and rnd.random() < 0.5:
            name, slug, *_ = _campaign(self.day)
            self.page(name, "campaign", f"/campaign/{slug}")
        elif item == "shop" and rnd.random() < 0.6:
            self.browse()
        elif item == "booking" and rnd.random() < 0.5:
            self.visit_booking()
        elif item == "member" and not self.known and rnd.random() < 0.5:
            self.identify()
        elif item == "quiz" and rnd.random() < 0.6:
            self.survey("skin_type_quiz")
        elif item == "stores":
            self.page(*_INFO_PAGES[2])

    def message(self, keyword: str | None = None) -> str | None:
        c, rnd = self.c, self.rnd
        table = KEYWORDS[c.locale]
        if keyword is None and rnd.random() < 0.75:
            keyword = rnd.choice(list(table))
        text = rnd.choice(table[keyword]) if keyword else rnd.choice(SMALL_TALK[c.locale])
        props: dict[str, Any] = {"channel": c.channel, "text": text, "message_type": "text"}
        if keyword:
            props["keyword"] = keyword
        self.track("Message Received", props)
        return keyword

    def survey(self, survey: str) -> None:
        rnd = self.rnd
        answers: dict[str, Any]
        if survey == "skin_type_quiz":
            concern = rnd.choice(["dryness", "dullness", "pores"])
            answers = {"skin_type": rnd.choice(_SKIN_TYPES), "concern": concern}
        elif survey == "tea_taste_profile":
            answers = {"taste": rnd.choice(_TEA_TASTES), "cups_per_day": rnd.randint(0, 4)}
        elif survey == "nps_after_order":
            answers = {"score": min(10, max(0, round(rnd.gauss(8.2, 1.8))))}
        else:
            answers = {"satisfaction": rnd.randint(3, 5)}
        self.track("Survey Submitted", {"survey": survey, "answers": answers}, via=self.page_via)

    def identify(self) -> None:
        """Sign up as a member: the userId, personal traits and channel ids arrive together."""
        c = self.c
        if self.known:
            return
        traits = dict(c.traits)
        if c.followed and c.channel == "line":  # the brand learns channel ids from a follow
            traits["line_user_id"] = c.channel_id
        elif c.followed and c.channel == "wecom":
            traits["wecom_external_userid"] = c.channel_id
        traits.update(
            acquisition_source=c.source, member_tier=self.tier, created_at=_iso(self.ts), locale=c.locale
        )
        referrer = c.referrer
        if referrer is not None:
            traits["referred_by"] = referrer.user_id
        if not self.emit("identify", "", traits, self.page_via):
            return
        c.identified_at = self.out[-1].ts
        if referrer is not None:
            self.credit_referrer(referrer, c.identified_at + 2000)

    def credit_referrer(self, referrer: Customer, at: int) -> None:
        """The friend who sent the invite gets ``Referral Completed`` once the invitee has signed up."""
        if at > self.world.end_ms:
            return
        code = f"LUMI{referrer.index:05d}"
        props = {"referrer_id": referrer.user_id, "referee_id": self.c.user_id, "invite_code": code}
        # The invitee's index keeps the message id unique among the referrer's own messages.
        seq = 1_000_000 + self.c.index
        self.out.append(_Event(at, referrer.index, seq, "track", "Referral Completed", props, "server", True))
        referrer.events += 1
        referrer.last_event = max(referrer.last_event, at)

    def landing(self) -> None:
        c = self.c
        referrer, utm_source, medium = _REFERRERS[c.source]
        name, slug, *_ = _campaign(self.day)
        query = f"?utm_source={utm_source}&utm_medium={medium}&utm_campaign={slug}"
        extra = {"referrer": referrer, "search": query}
        if c.source in ("ad", "kol"):
            self.page(name, "campaign", f"/campaign/{slug}", extra)
        else:
            self.page(*_INFO_PAGES[0], extra)

    def pick_product(self) -> Product:
        pool = _TEA if self.rnd.random() < self.c.tea_lover else _SKIN
        return self.rnd.choice(pool)

    def browse(self, campaign: bool = False, boost: float = 1.0) -> None:
        """Look at a few products; maybe wish, add to cart and check out."""
        c, rnd = self.c, self.rnd
        sale = self.world.season[self.world.day_of(self.ts)]
        if campaign:
            name, slug, *_ = _campaign(self.day)
            self.page(name, "campaign", f"/campaign/{slug}")
        elif rnd.random() < 0.3:
            self.page(*rnd.choice(_INFO_PAGES[:2]))
        for _ in range(1 + min(int(rnd.expovariate(0.7)), 5)):
            product = self.pick_product()
            self.page(product.name, "product", f"/products/{product.slug}", {"product_id": product.id})
            self.track("Product Viewed", product.properties(), via="web")
            if rnd.random() < 0.05:
                wish = {**product.properties(), "wishlist_id": f"wl-{c.index}"}
                self.track("Product Added to Wishlist", wish, via="web")
            if rnd.random() < min(0.9, c.buy * 0.45 * boost * sale**0.5):
                self.cart.append(product)
                self.track("Product Added", {**product.properties(), "cart_id": f"cart-{c.index}"}, via="web")
        if self.cart and rnd.random() < 0.7:
            self.checkout()

    def checkout(self) -> None:
        c, rnd = self.c, self.rnd
        self.identify()  # the shop asks members to log in before paying
        if not self.known:
            return
        quantity = 2 if rnd.random() < 0.15 * c.spend else 1
        items = [p.properties(quantity) for p in self.cart]
        if rnd.random() < 0.3 * c.spend:  # bigger spenders pick up a gift box or a teapot too
            items.append(rnd.choice([p for p in CATALOGUE if p.price >= 1500]).properties())
        subtotal = sum(p["price"] * p["quantity"] for p in items)
        _, _, coupon, discount = _campaign(self.day)
        if coupon is None and c.orders == 0 and rnd.random() < 0.5:
            coupon, discount = "WELCOME-50", 50
        order_id = f"LT{self.day:%y%m%d}-{c.index:05d}{c.orders:02d}"
        revenue = subtotal - discount if coupon else subtotal
        order = {"order_id": order_id, "revenue": revenue, "currency": "TWD", "products": items}
        self.track("Checkout Started", dict(order), via="web")
        if rnd.random() > 0.8:
            return  # abandoned; the cart stays for next time
        self.cart = []
        extras = {"coupon": coupon, "discount": discount} if coupon else {}
        payment = rnd.choice(_PAYMENT[c.region])
        if not self.track("Order Completed", {**order, **extras, "payment_method": payment}, via="server"):
            return
        c.orders += 1
        c.revenue += revenue
        self.after_order(order_id, revenue, items)

    def after_order(self, order_id: str, revenue: int, items: list[dict[str, Any]]) -> None:
        """Tier upgrades now; reviews, NPS and refunds in the days after."""
        c, rnd = self.c, self.rnd
        tier = next((name for floor, name in _TIERS if c.revenue >= floor), "regular")
        if tier != self.tier:
            self.tier = tier
            self.emit("identify", "", {"member_tier": tier}, "server")
        if rnd.random() < 0.04:
            at = self.ts + int(rnd.uniform(1, 7) * DAY_MS)
            reason = rnd.choice(["damaged_in_delivery", "skin_reaction", "changed_mind"])
            refund = {"order_id": order_id, "revenue": revenue, "total": revenue, "currency": "TWD"}
            refund["reason"] = reason
            if self.track("Order Refunded", refund, via="server", at=at):
                c.revenue -= revenue
            return
        if rnd.random() < 0.22:
            item = rnd.choice(items)
            rating = rnd.choices((5, 4, 3, 2, 1), (55, 28, 10, 4, 3))[0]
            review = {"product_id": item["product_id"], "review_id": f"rv-{order_id}", "rating": rating}
            self.track("Product Reviewed", review, via="web", at=self.ts + int(rnd.uniform(3, 12) * DAY_MS))
        if rnd.random() < 0.12:
            answers = {"score": min(10, max(0, round(rnd.gauss(8.2, 1.8))))}
            survey = {"survey": "nps_after_order", "answers": answers, "order_id": order_id}
            self.track("Survey Submitted", survey, via="web", at=self.ts + 2 * DAY_MS)


class Simulation:
    """The simulated brand: its customers and their messages, ready to render in timestamp order."""

    def __init__(
        self, customers: int = 3000, days: int = 180, seed: int = 7, end: datetime | None = None
    ) -> None:
        if customers < 1 or days < 1:
            raise ValueError("customers and days must be at least 1")
        self.seed = seed
        self.world = _make_world(days, seed, end)
        self.customers = _population(customers, self.world)
        self._events: list[_Event] = []
        identified: list[tuple[int, int]] = []  # (identified_at, index), sorted
        for c in sorted(self.customers, key=lambda c: (c.arrival, c.index)):
            rnd = random.Random(seed * 1_000_003 + c.index + 500_000_000)
            if c.source == "friend_referral":
                c.referrer = self._pick_referrer(identified, c.arrival, rnd)
            _Life(c, self.world, self._events, rnd).live()
            if c.identified_at is not None:
                bisect.insort(identified, (c.identified_at, c.index))
        self._events.sort(key=lambda e: (e.ts, e.customer, e.seq))

    def _pick_referrer(
        self, identified: list[tuple[int, int]], before: int, rnd: random.Random
    ) -> Customer | None:
        """An earlier member, buyers and loyal customers more likely: they are the ones who share invites."""
        eligible = identified[: bisect.bisect_left(identified, (before, -1))]
        if not eligible:
            return None
        people = [self.customers[i] for _, i in eligible]
        weights = [1 + 2 * min(p.orders, 5) + 4 * p.loyal for p in people]
        return rnd.choices(people, weights)[0]

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.messages()

    def messages(self, start: int = 0, stop: int | None = None) -> Iterator[dict[str, Any]]:
        """The messages from position ``start`` up to ``stop`` (all by default), rendered as consumed."""
        for event in self._events[start:stop]:
            yield self._render(event)

    def count_before(self, moment: datetime) -> int:
        """How many messages are timestamped before ``moment``: the demo sends those before the rest."""
        return bisect.bisect_left(self._events, moment.timestamp() * 1000, key=lambda e: e.ts)

    def message_id(self, event: _Event) -> str:
        return f"demo-{self.seed}-{event.customer}-{event.seq}"

    def _render(self, e: _Event) -> dict[str, Any]:
        c = self.customers[e.customer]
        message: dict[str, Any] = {"type": e.kind, "messageId": self.message_id(e), "timestamp": _iso(e.ts)}
        if e.via in ("web", "liff") or not e.known:
            anonymous = e.via in ("web", "liff") or c.channel_id is None
            message["anonymousId"] = c.anonymous_id if anonymous else f"{e.via}:{c.channel_id}"
        if e.known:
            message["userId"] = c.user_id
        if e.kind == "track":
            message["event"] = e.name
            message["properties"] = e.body
        elif e.kind == "page":
            message["name"] = e.name
            message["properties"] = e.body
        else:
            message["traits"] = e.body
        message["context"] = self._context(c, e.via)
        return message

    def _context(self, c: Customer, via: str) -> dict[str, Any]:
        """One context object per customer and channel, shared by their messages."""
        if via not in c.contexts:
            context: dict[str, Any] = {"library": LIBRARY}
            if via != "server":
                context.update(timezone=c.timezone, locale=c.locale)
            if via in ("web", "liff"):
                kind = "liff" if via == "liff" else "wechat" if c.channel == "wecom" else "web"
                agents = _USER_AGENTS[kind]
                context["userAgent"] = agents[c.index % len(agents)]
            if via in ("liff", "line", "wecom") and c.channel_id:
                id_type = "line_user_id" if c.channel == "line" else "wecom_external_userid"
                external = {"id": c.channel_id, "type": id_type, "collection": "users", "encoding": "none"}
                context["externalIds"] = [external]
            c.contexts[via] = context
        return c.contexts[via]

    def summary(self) -> SimulationSummary:
        end, people, events = self.world.end_ms, self.customers, self._events
        return SimulationSummary(
            customers=len(people),
            events=len(self._events),
            by_event=dict(Counter(e.name if e.kind == "track" else e.kind for e in events).most_common()),
            identified=sum(c.identified_at is not None for c in people),
            anonymous_then_identified=sum(
                c.anonymous_events > 0 and c.identified_at is not None for c in people
            ),
            followers=sum(c.followed for c in people),
            unfollowed=sum(c.unfollowed for c in people),
            buyers=sum(c.orders > 0 for c in people),
            repeat_buyers=sum(c.orders > 1 for c in people),
            dormant=sum(end - c.last_event >= DORMANT_DAYS * DAY_MS for c in people),
            revenue_twd=round(sum(c.revenue for c in people)),
            first=datetime.fromtimestamp(self._events[0].ts / 1000, UTC) if self._events else None,
            last=datetime.fromtimestamp(self._events[-1].ts / 1000, UTC) if self._events else None,
        )

    def showcase(self) -> Customer | None:
        """A customer worth looking up: identified by e-mail, with the most orders."""
        members = [c for c in self.customers if c.identified_at is not None and c.email]
        return max(members, key=lambda c: (c.orders, c.events, -c.index), default=None)


def simulate(
    customers: int = 3000, days: int = 180, seed: int = 7, end: datetime | None = None
) -> Iterator[dict[str, Any]]:
    """The brand's history as Segment messages (plain dicts), in timestamp order."""
    return iter(Simulation(customers, days, seed, end))


def summarize(events: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Messages per track event name, or per call type (``page``, ``identify``) for the others."""
    counts = Counter(str(e.get("event") if e.get("type") == "track" else e.get("type")) for e in events)
    return dict(counts.most_common())
