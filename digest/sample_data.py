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

# (email, name, sections); no sections means every section.
_SUBSCRIBERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("ada.reader@example.com", "Ada Reader", ()),
    ("bruno.costa@example.org", "Bruno Costa", ("Latin America", "Europe")),
    ("chen.wei@example.com", "Chen Wei", ("Asia-Pacific",)),
    ("dalia.nasser@example.org", "Dalia Nasser", ("Middle East", "Military Industrial Complex")),
    ("eoin.byrne@example.com", "", ()),
)


def sample_articles(now: datetime) -> list[dict[str, str]]:
    """About 16 invented articles dated over the five days before now, newest first."""
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    articles = []
    for index, (section, slug, title, dek, summary, author, alt, credit) in enumerate(_STORIES):
        # 3 hours to about 4.5 days back, a few hours apart, so sections interleave.
        published = (now - timedelta(hours=3 + index * 7)).replace(second=0, microsecond=0)
        section_slug = section.lower().replace(" ", "-")
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
            "image_url": f"{IMAGES}/{slug}.jpg",
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
