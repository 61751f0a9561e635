"""Invented demo content: a week of articles and a few subscribers for ``digest demo``.

Every name, headline and quote here is made up for the demo. Articles are dated relative
to "now" (over the last five days) so the demo always has this week's content, and they
come in the same dict shape ``digest import`` accepts for JSON, so the demo goes through
the real import path.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

SITE = "https://news.example.org"
IMAGES = "https://images.example.org/demo"

# (section, slug, title, dek, summary, author, image alt, photo credit)
_STORIES: tuple[tuple[str, str, str, str, str, str, str, str], ...] = (
    (
        "Europe", "grain-corridor-insurers",
        "Insurers return to the grain corridor, at a price",
        "Cover for Black Sea cargoes is available again, but premiums still price in a war.",
        "Underwriters in three capitals have resumed writing policies for bulk carriers, "
        "after a quiet month without incidents. Shipowners say the premiums decide which "
        "routes pay, and which ports wait.",
        "Marta Kovalenko", "A bulk carrier loading grain under floodlights at night",
        "Harbourline Images / Oleksa Demchuk",
    ),
    (
        "Europe", "alpine-power-swap",
        "Two Alpine states swap winter power for summer water",
        "A quiet deal between grid operators may do more for supply than the summit did.",
        "One country has spare hydro in spring; the other has nuclear in winter. Their "
        "operators have signed a seasonal exchange that regulators call a template and "
        "critics call a way around the market.",
        "Jonas Reichl", "High-voltage pylons crossing a snowy mountain pass",
        "Alpenblick Agency / Vera Stanzl",
    ),
    (
        "Europe", "baltic-rail-gauge",
        "The last metre: finishing a railway across a gauge border",
        "Tracks are laid to the frontier. Trains still stop there, and so does the budget.",
        "Engineers finished the standard-gauge line on schedule; the transfer terminal that "
        "connects it to the old network is two years late. Freight firms are planning "
        "around the gap.",
        "Liis Tammepuu", "Two rail lines of different widths running side by side",
        "Nordlys Press / Kaarel Vask",
    ),
    (
        "Europe", "coalition-budget-hours",
        "A coalition budget agreed in the small hours, and unpicked by noon",
        "Partners signed a spending plan overnight; by lunchtime two of them disagreed on it.",
        "The draft keeps defence spending flat and raises pensions, but the line on energy "
        "subsidies was read three ways before the press conference ended.",
        "Pieter Vandaele", "Empty chairs around a long table in a parliament committee room",
        "Lowlands Wire / Anouk Mertens",
    ),
    (
        "Latin America", "lithium-water-ledger",
        "Salt flat communities keep their own water ledger",
        "Villagers log the level of every well, because they trust their numbers more.",
        "As lithium brine operations expand, a network of local monitors records water "
        "levels each week and publishes them. Companies now cite the same spreadsheet.",
        "Camila Irureta", "A woman measuring a well beside a white salt flat",
        "Altiplano Foto / Mateo Quispe",
    ),
    (
        "Latin America", "river-port-dredging",
        "Dredging a river port, one election at a time",
        "Every new government promises a deeper channel. The sandbanks keep their own schedule.",
        "A contract to deepen the main river approach has changed hands four times in ten "
        "years. Exporters now pay for a private survey boat to find the draft each week.",
        "Hernán Sotelo", "A dredger working in brown river water near grain silos",
        "Litoral Imagen / Sofía Ramella",
    ),
    (
        "Latin America", "central-bank-cash",
        "Why a central bank is printing more banknotes in a digital boom",
        "Card payments are rising fast; so is the demand for cash in the countryside.",
        "Officials expected cash to fade with instant transfers. Instead, rural branches "
        "report record withdrawals, and economists are arguing about why.",
        "Lucía Ferraz", "Stacks of banknotes on a counting machine",
        "Cono Sur Agency / Paulo Medeiros",
    ),
    (
        "Asia-Pacific", "atoll-desalination",
        "An atoll bets on solar desalination before the next dry season",
        "Rain tanks failed twice in five years. A floating solar plant is the new plan.",
        "The island council approved a small desalination plant powered by panels on the "
        "lagoon. Engineers warn that spare parts, not sunshine, will decide whether it runs.",
        "Teuila Faleolo", "Solar panels floating on a calm turquoise lagoon",
        "Reef Line Media / Iosefa Tuilagi",
    ),
    (
        "Asia-Pacific", "strait-ferry-talks",
        "Ferry talks across a tense strait, with fishermen at the table",
        "The agenda is timetables. The subtext is who patrols the water between them.",
        "Negotiators from both coasts met to restore a passenger ferry suspended for three "
        "years. Fishing associations asked for, and got, a seat at the talks.",
        "Wen Hsiao-ling", "A passenger ferry moored at an empty terminal in the rain",
        "Harbour Eye / Lin Po-han",
    ),
    (
        "Asia-Pacific", "monsoon-chip-lines",
        "Monsoon forecasts now set the shifts at a chip plant",
        "A factory that needs ultra-pure water plans production around the rain.",
        "Managers at a semiconductor plant rebuilt their schedule around a weather model "
        "after a dry spell cut water supply. Nearby farms say they were not consulted.",
        "Priya Raghunathan", "Clean-room workers in white suits beside a window with rain",
        "Deccan Lens / Arvind Kulkarni",
    ),
    (
        "Middle East", "gulf-desert-farms",
        "Desert greenhouses count every litre, and every riyal",
        "Vertical farms promise food security; their water and power bills tell another story.",
        "A new wave of climate-controlled farms grows leafy greens year-round. Growers "
        "say the crop is reliable, and the subsidy that keeps it affordable less so.",
        "Yasmin Al-Harbi", "Rows of lettuce under purple grow lights inside a greenhouse",
        "Dune Light Agency / Faisal Qahtani",
    ),
    (
        "Middle East", "border-crossing-trucks",
        "A reopened border crossing, measured in trucks per hour",
        "Traders cheered the announcement; drivers are still counting the hours in line.",
        "The crossing reopened after a long closure, but inspections run on one scanner. "
        "Logistics firms publish their own wait times, and they rarely match the official ones.",
        "Omar Haddad", "A queue of lorries stretching along a desert road at dusk",
        "Levant Frame / Rami Khoury",
    ),
    (
        "Middle East", "reconstruction-tenders",
        "Reconstruction tenders open, and the small builders line up",
        "Big contractors win the headlines. Local firms want the subcontracts.",
        "A fund for rebuilding homes and clinics has published its first tenders. Small "
        "builders say the paperwork favours firms that already have lawyers.",
        "Nour Saleh", "Builders stacking concrete blocks beside a damaged house",
        "Cedar Press / Hala Mansour",
    ),
    (
        "Military Industrial Complex", "munitions-second-shift",
        "A second shift at the munitions plant, and no one to run it",
        "Orders have doubled. The skilled workforce has not.",
        "A state-owned plant added a night shift to meet new orders, but vacancies for "
        "machinists and inspectors remain open. Training takes longer than contracts allow.",
        "Graham Oyelaran", "An empty assembly line lit by overhead lamps at night",
        "Steelworks Media / Dana Pruitt",
    ),
    (
        "Military Industrial Complex", "procurement-cost-overruns",
        "Reading a procurement report backwards",
        "Start with the footnotes: that is where the cost overruns are.",
        "An annual review lists programmes on time and on budget in its opening pages. The "
        "appendix tells a different story, one revised baseline at a time.",
        "Helen Marchetti", "A thick printed report with coloured tabs on a desk",
        "Capitol Frame / Ruben Alcott",
    ),
    (
        "Military Industrial Complex", "drone-startups-export",
        "Drone start-ups discover export controls",
        "Venture money moves fast. Licence applications do not.",
        "Young defence firms that grew on domestic orders are applying to sell abroad for "
        "the first time. Founders describe a process built for companies fifty years older.",
        "Ken Abernathy", "A small fixed-wing drone on a workbench in a hangar",
        "Frontier Tech Images / Ana Lindqvist",
    ),
)

#: Stories told without a photo, so the demo shows the text-only card too.
_NO_PHOTO = frozenset({"sovereign-bond-pesos", "arms-fair-badges"})

_MORE_STORIES: tuple[tuple[str, str, str, str, str, str, str, str], ...] = (
    (
        "Latin America", "sovereign-bond-pesos",
        "A sovereign bond priced in pesos finds foreign buyers",
        "For the first time in a decade, investors abroad took the currency risk themselves.",
        "The treasury sold a ten-year bond in local currency and half of it went to funds "
        "overseas. Traders credit a steadier central bank; sceptics point to the coupon.",
        "Martín Echeverry", "", "",
    ),
    (
        "Latin America", "andes-rail-freight",
        "Freight trains return to a high Andean line",
        "A railway closed by landslides reopens for copper, not for passengers.",
        "Mining companies paid for the repairs and booked most of the slots. Towns along the "
        "line asked for a weekly passenger service and got a feasibility study.",
        "Paola Urrutia", "A freight train crossing a viaduct between brown mountains",
        "Cordillera Press / Iván Salas",
    ),
    (
        "Asia-Pacific", "cyclone-shelter-schools",
        "Schools that double as cyclone shelters get a second storey",
        "A coastal province is raising classrooms above the last storm's water line.",
        "Engineers redesigned a standard school so the upper floor holds a village for three "
        "days. Teachers asked for storage that survives a flood; they got it.",
        "Nguyen Thi Lan", "Children on the balcony of a raised concrete school",
        "Delta Frame / Tran Van Minh",
    ),
    (
        "Asia-Pacific", "tuna-quota-auction",
        "The first auction of tuna fishing days",
        "Small island states sold access by the day, and the bids surprised them.",
        "Fishing fleets bid for days in national waters instead of paying a flat licence. "
        "Officials say the auction raised more; boat owners say it rewards the biggest ships.",
        "Sione Vake", "Tuna laid out in rows on a wet market floor",
        "Pacific Lens / Mele Tupou",
    ),
    (
        "Middle East", "solar-souk-rooftops",
        "Rooftop solar climbs the old market's roofs",
        "Shopkeepers pooled their roofs, and now sell power to the mosque next door.",
        "A cooperative of traders installed panels across a covered market and shares the "
        "income by floor area. The city is deciding whether heritage rules allow it.",
        "Karim Mansour", "Solar panels on flat roofs above a narrow market street",
        "Old City Images / Leila Darwish",
    ),
    (
        "Middle East", "desalination-brine-study",
        "Where the brine goes: a desalination plant's other output",
        "Marine biologists mapped the salty plume, and the fishermen already knew it.",
        "A survey of the outfall found lower oxygen over a wider area than the permit assumed. "
        "The operator plans diffusers; the fishing cooperative wants a say in where.",
        "Huda Al-Sabah", "A pipeline running from a plant into shallow green water",
        "Gulf Survey Photo / Tariq Nasser",
    ),
    (
        "Military Industrial Complex", "arms-fair-badges",
        "At the arms fair, the badge tells you who is buying",
        "Delegations, brokers and students wear different colours; reporters watch the greens.",
        "A week at the biennial exhibition shows how deals begin: with a lanyard, a coffee "
        "and a brochure that says nothing about price.",
        "Rachel Dunmore", "", "",
    ),
    (
        "Military Industrial Complex", "shipyard-apprentices",
        "A shipyard's apprentices outnumber its welders",
        "The yard won a frigate order and is training the people to build it.",
        "Half of the workforce will be in training next year. Supervisors say the hard part "
        "is not welding but inspecting welds, and that takes a decade to learn.",
        "Callum Reid", "Apprentices in orange overalls beside a ship's hull section",
        "Dockside Media / Fiona Grant",
    ),
)

# (email, name, sections); no sections means every section.
_SUBSCRIBERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("ada.reader@example.com", "Ada Reader", ()),
    ("bruno.costa@example.org", "Bruno Costa", ("Latin America", "Europe")),
    ("chen.wei@example.com", "Chen Wei", ("Asia-Pacific",)),
    ("dalia.nasser@example.org", "Dalia Nasser", ("Middle East", "Military Industrial Complex")),
    ("eoin.byrne@example.com", "", ()),
)


def sample_articles(now: datetime) -> list[dict[str, Any]]:
    """24 invented articles (a full issue) dated over the five days before now, newest first."""
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    articles = []
    stories = _STORIES + _MORE_STORIES
    for index, (section, slug, title, dek, summary, author, alt, credit) in enumerate(stories):
        # 3 hours to about 4.5 days back, a few hours apart, so sections interleave.
        minutes = 180 + index * 270
        published = (now - timedelta(minutes=minutes)).replace(second=0, microsecond=0)
        section_slug = section.lower().replace(" ", "-")
        photo = slug not in _NO_PHOTO
        articles.append({
            "guid": f"demo:{slug}",
            "url": f"{SITE}/{section_slug}/{slug}",
            "title": title,
            "dek": dek,
            "summary": summary,
            "body_html": (
                f"<p>{summary}</p>"
                "<p>This is invented demo text. In a real feed, the article would go on "
                f'here; <a href="{SITE}/about">read about the demo</a>.</p>'
            ),
            "author": author,
            "section": section,
            "image_url": f"{IMAGES}/{slug}.jpg" if photo else "",
            "image_width": 1200 if photo else 0,
            "image_height": 675 if photo else 0,
            "image_alt": alt,
            "image_credit": credit,
            "published_at": published.isoformat(),
        })
    return articles


def sample_subscribers() -> list[dict[str, Any]]:
    """Five invented subscribers (email, name, sections); empty sections means all of them."""
    return [
        {"email": email, "name": name, "sections": list(sections)}
        for email, name, sections in _SUBSCRIBERS
    ]
