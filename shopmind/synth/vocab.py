"""Static vocabularies for the synthetic shop: taxonomy, brands, words, names, places.

Everything here is plain data. The generator only ever indexes into these tables with
seeded random numbers, so changing a list changes the generated shop (but not its
determinism for a given version of this file).
"""

from __future__ import annotations

from typing import Final

# Taxonomy: top-level -> subcategory -> leaf -> (median price in EUR, product nouns).
# The product nouns are what titles, descriptions and search queries are built from,
# so they are deliberately specific to the leaf ("Vitamin C Serum", "Chef's Knife").
TAXONOMY: Final[dict[str, dict[str, dict[str, tuple[float, tuple[str, ...]]]]]] = {
    "Beauty": {
        "Skin care": {
            "Serums": (28.0, ("Vitamin C Serum", "Hyaluronic Serum", "Retinol Serum", "Niacinamide Serum")),
            "Moisturisers": (22.0, ("Day Cream", "Night Cream", "Gel Moisturiser")),
            "Cleansers": (12.0, ("Foam Cleanser", "Micellar Water", "Cleansing Balm")),
            "Sun care": (16.0, ("Sunscreen SPF 50", "Sun Fluid SPF 30", "After-Sun Lotion")),
        },
        "Hair care": {
            "Shampoo": (8.0, ("Shampoo", "Repair Shampoo", "Volume Shampoo")),
            "Conditioner": (9.0, ("Conditioner", "Leave-in Conditioner", "Hair Mask")),
            "Hair styling": (11.0, ("Hair Wax", "Styling Mousse", "Hairspray")),
        },
        "Make-up": {
            "Lipstick": (15.0, ("Matte Lipstick", "Lip Gloss", "Lip Tint")),
            "Mascara": (13.0, ("Volume Mascara", "Lengthening Mascara")),
            "Foundation": (24.0, ("Liquid Foundation", "BB Cream", "Concealer")),
        },
        "Fragrance": {
            "Eau de parfum": (65.0, ("Eau de Parfum",)),
            "Eau de toilette": (42.0, ("Eau de Toilette", "Cologne")),
            "Body mist": (14.0, ("Body Mist", "Scented Body Spray")),
        },
    },
    "Electronics": {
        "Phones & accessories": {
            "Smartphones": (420.0, ("Smartphone", "5G Smartphone")),
            "Phone cases": (18.0, ("Phone Case", "Silicone Case", "Wallet Case")),
            "Chargers": (25.0, ("USB-C Charger", "Wireless Charger", "Power Bank")),
        },
        "Audio": {
            "Headphones": (120.0, ("Noise-Cancelling Headphones", "On-Ear Headphones", "Wireless Earbuds")),
            "Speakers": (85.0, ("Bluetooth Speaker", "Smart Speaker", "Soundbar")),
        },
        "Computers": {
            "Laptops": (900.0, ("Laptop", "Ultrabook", "Gaming Laptop")),
            "Monitors": (240.0, ("27-inch Monitor", "4K Monitor", "Curved Monitor")),
            "Keyboards & mice": (45.0, ("Mechanical Keyboard", "Wireless Mouse", "Keyboard and Mouse Set")),
        },
        "Cameras": {
            "Digital cameras": (650.0, ("Mirrorless Camera", "Compact Camera")),
            "Action cameras": (260.0, ("Action Camera", "Action Camera Bundle")),
            "Camera accessories": (35.0, ("Camera Tripod", "SD Memory Card", "Camera Bag")),
        },
        "Smart home": {
            "Smart lighting": (30.0, ("Smart Bulb", "LED Light Strip")),
            "Security cameras": (90.0, ("Indoor Security Camera", "Video Doorbell")),
        },
    },
    "Home & Kitchen": {
        "Cookware": {
            "Pans": (45.0, ("Frying Pan", "Non-Stick Pan", "Cast Iron Skillet")),
            "Pots": (60.0, ("Stock Pot", "Dutch Oven", "Saucepan")),
            "Knives": (55.0, ("Chef's Knife", "Knife Set", "Bread Knife")),
        },
        "Small appliances": {
            "Coffee machines": (180.0, ("Espresso Machine", "Filter Coffee Maker", "Milk Frother")),
            "Blenders": (70.0, ("Blender", "Hand Blender", "Smoothie Maker")),
            "Kettles": (40.0, ("Electric Kettle", "Glass Kettle")),
        },
        "Home decor": {
            "Candles": (15.0, ("Scented Candle", "Candle Set")),
            "Cushions": (20.0, ("Cushion Cover", "Throw Pillow")),
            "Wall art": (35.0, ("Art Print", "Picture Frame")),
        },
        "Bedding & bath": {
            "Bed linen": (55.0, ("Duvet Cover Set", "Fitted Sheet")),
            "Towels": (25.0, ("Bath Towel Set", "Hand Towel")),
        },
        "Cleaning": {
            "Cleaning supplies": (7.0, ("All-Purpose Cleaner", "Dish Soap", "Laundry Detergent")),
            "Vacuum cleaners": (220.0, ("Cordless Vacuum", "Robot Vacuum")),
        },
    },
    "Grocery": {
        "Coffee & tea": {
            "Coffee beans": (13.0, ("Espresso Beans", "Coffee Beans", "Ground Coffee")),
            "Tea": (6.0, ("Green Tea", "Herbal Tea", "Earl Grey Tea")),
            "Coffee capsules": (8.0, ("Coffee Capsules", "Lungo Capsules")),
        },
        "Snacks": {
            "Chocolate": (3.5, ("Dark Chocolate", "Milk Chocolate Bar", "Pralines")),
            "Crisps & nuts": (4.0, ("Salted Almonds", "Potato Crisps", "Trail Mix")),
            "Cereal bars": (5.0, ("Protein Bar", "Granola Bar")),
        },
        "Pantry": {
            "Pasta & rice": (3.0, ("Spaghetti", "Basmati Rice", "Fusilli")),
            "Oils & vinegar": (9.0, ("Olive Oil", "Balsamic Vinegar")),
            "Spices": (4.0, ("Smoked Paprika", "Curry Powder", "Sea Salt")),
        },
        "Drinks": {
            "Juices": (3.0, ("Orange Juice", "Apple Juice")),
            "Water": (2.0, ("Sparkling Water", "Still Water")),
            "Soft drinks": (2.5, ("Lemonade", "Cola", "Ginger Ale")),
        },
    },
    "Fashion": {
        "Women": {
            "Dresses": (60.0, ("Midi Dress", "Wrap Dress", "Summer Dress")),
            "Tops": (25.0, ("Blouse", "T-Shirt", "Knit Top")),
            "Jeans": (70.0, ("Skinny Jeans", "Mom Jeans")),
        },
        "Men": {
            "Shirts": (40.0, ("Oxford Shirt", "Linen Shirt", "Polo Shirt")),
            "Trousers": (55.0, ("Chinos", "Slim Jeans", "Cargo Trousers")),
            "Knitwear": (65.0, ("Merino Sweater", "Cardigan", "Hoodie")),
        },
        "Shoes": {
            "Sneakers": (90.0, ("Sneakers", "Canvas Sneakers")),
            "Boots": (120.0, ("Chelsea Boots", "Ankle Boots")),
            "Sandals": (45.0, ("Sandals", "Slides")),
        },
        "Accessories": {
            "Bags": (80.0, ("Tote Bag", "Leather Backpack", "Crossbody Bag")),
            "Watches": (150.0, ("Analog Watch", "Chronograph Watch")),
            "Sunglasses": (60.0, ("Sunglasses", "Aviator Sunglasses")),
        },
    },
    "Sports": {
        "Fitness": {
            "Yoga": (30.0, ("Yoga Mat", "Yoga Block", "Resistance Band")),
            "Weights": (50.0, ("Dumbbell Set", "Kettlebell")),
            "Fitness trackers": (110.0, ("Fitness Tracker", "Heart Rate Monitor")),
        },
        "Running": {
            "Running shoes": (110.0, ("Trail Running Shoes", "Road Running Shoes")),
            "Running apparel": (35.0, ("Running Shirt", "Running Tights", "Running Jacket")),
        },
        "Outdoor": {
            "Tents": (160.0, ("Dome Tent", "Backpacking Tent")),
            "Backpacks": (75.0, ("Hiking Backpack", "Daypack")),
            "Sleeping bags": (80.0, ("Sleeping Bag", "Camping Mat")),
        },
        "Cycling": {
            "Bike accessories": (25.0, ("Bike Light Set", "Bike Lock", "Bottle Cage")),
            "Helmets": (70.0, ("Bike Helmet", "MTB Helmet")),
        },
        "Team sports": {
            "Balls": (25.0, ("Football", "Basketball", "Volleyball")),
            "Goals & nets": (60.0, ("Mini Goal", "Training Net")),
        },
    },
    "Toys": {
        "Building": {
            "Building blocks": (35.0, ("Building Block Set", "Construction Kit")),
            "Marble runs": (45.0, ("Marble Run", "Marble Run Extension")),
        },
        "Games & puzzles": {
            "Board games": (30.0, ("Board Game", "Strategy Game", "Family Game")),
            "Puzzles": (18.0, ("1000-Piece Puzzle", "Jigsaw Puzzle")),
            "Card games": (12.0, ("Card Game", "Trading Card Pack")),
        },
        "Baby & toddler": {
            "Soft toys": (20.0, ("Plush Bear", "Soft Toy")),
            "Activity toys": (28.0, ("Activity Cube", "Stacking Rings", "Play Gym")),
        },
        "Outdoor toys": {
            "Water toys": (15.0, ("Water Gun", "Paddling Pool")),
            "Ride-ons": (80.0, ("Balance Bike", "Kick Scooter")),
        },
    },
    "Books": {
        "Fiction": {
            "Crime & thriller": (14.0, ("Crime Novel", "Thriller")),
            "Fantasy": (16.0, ("Fantasy Novel", "Epic Saga")),
            "Romance": (12.0, ("Romance Novel", "Love Story")),
        },
        "Non-fiction": {
            "Biography": (20.0, ("Biography", "Memoir")),
            "History": (24.0, ("History Book", "Illustrated History")),
            "Science": (22.0, ("Popular Science Book", "Science Guide")),
        },
        "Cookbooks": {
            "Baking": (25.0, ("Baking Book", "Bread Cookbook")),
            "Vegetarian": (23.0, ("Vegetarian Cookbook", "Vegan Cookbook")),
        },
        "Children's books": {
            "Picture books": (13.0, ("Picture Book", "Bedtime Story Book")),
            "Young adult": (15.0, ("Young Adult Novel", "Coming-of-Age Novel")),
        },
    },
}

TOP_CATEGORIES: Final[tuple[str, ...]] = tuple(TAXONOMY)
"""Top-level category names; also the order of the `taste` vector in the ground truth."""

# How popular each top-level category is overall (drives which categories users like).
TOP_WEIGHTS: Final[dict[str, float]] = {
    "Beauty": 0.14, "Electronics": 0.15, "Home & Kitchen": 0.13, "Grocery": 0.12,
    "Fashion": 0.17, "Sports": 0.10, "Toys": 0.10, "Books": 0.09,
}

# Spread of log-prices around the leaf median (wider for fashion/electronics).
PRICE_SIGMA: Final[dict[str, float]] = {
    "Beauty": 0.40, "Electronics": 0.50, "Home & Kitchen": 0.45, "Grocery": 0.35,
    "Fashion": 0.50, "Sports": 0.45, "Toys": 0.40, "Books": 0.25,
}

# Items people rebuy; the value is the typical replenishment interval in days.
CONSUMABLE_DAYS: Final[dict[str, float]] = {"Grocery": 12.0, "Beauty": 26.0}

BRANDS: Final[dict[str, tuple[str, ...]]] = {
    "Beauty": ("Lumière", "Dermaflor", "Aquavera", "Belle Rive", "Naturkind", "Skinlab", "Rosalie", "Veluna"),
    "Electronics": ("Voltra", "Nexon", "Klangwerk", "Pixelon", "Auralis", "Technova", "Brightcore", "Zentra"),
    "Home & Kitchen": (
        "Kochhaus", "Casa Verde", "Nordhem", "Ferro & Co", "Lindgren", "Maison Blanc", "Kupferwerk", "Hygge Home",
    ),
    "Grocery": (
        "Bergquell", "Sonnenhof", "Bio Garten", "Tierra Buena", "Alpenmilch", "Kaffeerösterei Nord", "Olivia",
        "Crunchy Co",
    ),
    "Fashion": ("Nordwind", "Atelier Nine", "Urban Fox", "Linea", "Blue Harbour", "Marlowe", "Stadtkind", "Velvet Row"),
    "Sports": ("Peakline", "Stridex", "Trailhawk", "Vireo Sports", "Ironleaf", "Alpenstieg", "Kinetic", "Wavecrest"),
    "Toys": (
        "Spielwerk", "Tiny Giants", "Blockhaus", "Funbrix", "Wunderwald", "Happy Otter", "Kleine Welt",
        "Puzzlewise",
    ),
    "Books": (
        "Harbour House", "Silbermond Verlag", "Inkwell Press", "Blue Lantern", "Northstar Books", "Papierflieger",
        "Quill & Page", "Meridian",
    ),
}

ADJECTIVES: Final[dict[str, tuple[str, ...]]] = {
    "Beauty": ("Hydrating", "Radiance", "Gentle", "Intense", "Soothing", "Brightening", "Nourishing", "Fresh"),
    "Electronics": ("Pro", "Ultra", "Compact", "Wireless", "Smart", "Premium", "Portable", "Fast"),
    "Home & Kitchen": ("Classic", "Premium", "Everyday", "Nordic", "Essential", "Stainless", "Cosy", "Modern"),
    "Grocery": ("Organic", "Fairtrade", "Classic", "Bio", "Roasted", "Natural", "Family Pack", "Fine"),
    "Fashion": ("Classic", "Slim-Fit", "Relaxed", "Organic Cotton", "Vintage", "Essential", "Oversized", "Tailored"),
    "Sports": ("Pro", "Lightweight", "Performance", "All-Weather", "Breathable", "Training", "Endurance", "Trail"),
    "Toys": ("Creative", "Colourful", "Wooden", "Junior", "Deluxe", "Adventure", "Mini", "Classic"),
    "Books": (
        "Bestselling", "Gripping", "Illustrated", "Award-Winning", "Essential", "Heartwarming", "Definitive",
        "New",
    ),
}

# Category-specific words for descriptions (so a text model can tell categories apart).
FEATURES: Final[dict[str, tuple[str, ...]]] = {
    "Beauty": (
        "hyaluronic acid", "vitamin C", "shea butter", "aloe vera", "niacinamide", "a light fragrance",
        "natural oils", "ceramides",
    ),
    "Electronics": (
        "Bluetooth 5.3", "USB-C fast charging", "a long-lasting battery", "active noise cancellation",
        "a 4K sensor", "Wi-Fi 6", "a two-year warranty", "an aluminium housing",
    ),
    "Home & Kitchen": (
        "a non-stick coating", "stainless steel", "dishwasher-safe parts", "an ergonomic handle",
        "soft-touch cotton", "energy-saving technology", "borosilicate glass", "a timeless design",
    ),
    "Grocery": (
        "whole ingredients", "no added sugar", "a rich aroma", "sustainably sourced beans", "sea salt",
        "cold-pressed oil", "a crunchy texture", "100% natural flavour",
    ),
    "Fashion": (
        "organic cotton", "merino wool", "a regular fit", "recycled polyester", "soft stretch denim",
        "genuine leather", "a breathable lining", "reinforced seams",
    ),
    "Sports": (
        "a breathable mesh", "shock-absorbing foam", "quick-dry fabric", "a non-slip surface",
        "reflective details", "a lightweight frame", "a waterproof membrane", "an adjustable strap",
    ),
    "Toys": (
        "non-toxic paints", "FSC-certified wood", "large chunky pieces", "rounded safe edges",
        "a sturdy storage box", "bright colours", "step-by-step instructions", "recycled plastic",
    ),
    "Books": (
        "a gripping plot", "vivid characters", "beautiful illustrations", "meticulous research",
        "easy step-by-step recipes", "an unexpected twist", "a foreword by the author", "full-colour photographs",
    ),
}

BENEFITS: Final[dict[str, tuple[str, ...]]] = {
    "Beauty": (
        "Dermatologically tested and suitable for sensitive skin", "Leaves skin soft, smooth and visibly radiant",
        "Vegan formula, free from parabens and silicones", "Absorbs quickly without a greasy finish",
    ),
    "Electronics": (
        "Pairs in seconds with phones, tablets and laptops", "Delivers crisp sound and sharp detail",
        "Built to last with a durable, scratch-resistant finish", "Easy set-up through the companion app",
    ),
    "Home & Kitchen": (
        "Heats evenly and cleans up in no time", "Adds a warm, welcoming touch to any room",
        "Designed for everyday use in busy kitchens", "Made to last for years of daily use",
    ),
    "Grocery": (
        "Perfect for breakfast, lunch or a quick snack", "Sourced from small farms and carefully packed",
        "Full of flavour with a natural taste", "A pantry staple for every kitchen",
    ),
    "Fashion": (
        "Easy to combine for work or weekend", "A comfortable fit that keeps its shape wash after wash",
        "Timeless style made with responsibly sourced materials", "Feels soft on the skin all day long",
    ),
    "Sports": (
        "Keeps you comfortable during intense workouts", "Tested by athletes in all weather conditions",
        "Light enough for long distances", "Supports your training from warm-up to cool-down",
    ),
    "Toys": (
        "Encourages creativity and fine motor skills", "Hours of fun for the whole family",
        "Safety-tested to EU toy standards", "Grows with your child's imagination",
    ),
    "Books": (
        "A page-turner you will not want to put down", "Praised by critics and readers alike",
        "The perfect gift for curious minds", "Written with warmth, wit and insight",
    ),
}

USES: Final[dict[str, tuple[str, ...]]] = {
    "Beauty": ("your morning routine", "sensitive skin", "daily care", "a pampering evening"),
    "Electronics": ("home office work", "travel and commuting", "gaming and streaming", "content creators"),
    "Home & Kitchen": ("family dinners", "small apartments", "weekend baking", "a cosy living room"),
    "Grocery": ("busy weekdays", "the office snack drawer", "family breakfasts", "slow Sunday mornings"),
    "Fashion": ("the office", "a relaxed weekend", "city breaks", "everyday wear"),
    "Sports": ("gym sessions", "weekend hikes", "marathon training", "outdoor adventures"),
    "Toys": ("rainy afternoons", "children aged 3 and up", "family game nights", "birthday presents"),
    "Books": ("long train rides", "a quiet evening", "book clubs", "holiday reading"),
}

# Item attributes per top-level category: key -> possible values. The first key is used
# as the title's variant ("30 ml", "Black", "500 g").
ATTRIBUTES: Final[dict[str, tuple[tuple[str, tuple[str, ...]], ...]]] = {
    "Beauty": (
        ("size", ("15 ml", "30 ml", "50 ml", "100 ml", "200 ml")),
        ("skin_type", ("all", "dry", "oily", "sensitive", "combination")),
    ),
    "Electronics": (
        ("colour", ("Black", "White", "Silver", "Graphite", "Blue")),
        ("connectivity", ("Bluetooth", "USB-C", "Wi-Fi", "Wired")),
    ),
    "Home & Kitchen": (
        ("colour", ("White", "Anthracite", "Sage", "Natural", "Terracotta")),
        ("material", ("stainless steel", "ceramic", "cotton", "glass", "oak")),
    ),
    "Grocery": (("weight", ("100 g", "250 g", "500 g", "1 kg", "Value Pack")), ("organic", ("yes", "no"))),
    "Fashion": (
        ("colour", ("Navy", "Black", "Off-White", "Olive", "Red", "Camel")), ("size", ("XS", "S", "M", "L", "XL")),
        ("material", ("cotton", "wool", "linen", "denim", "leather")),
    ),
    "Sports": (("colour", ("Black", "Neon Yellow", "Petrol", "Grey", "Red")), ("size", ("S", "M", "L", "one size"))),
    "Toys": (("age", ("0+", "3+", "6+", "8+", "12+")), ("material", ("wood", "plastic", "plush", "cardboard"))),
    "Books": (
        ("format", ("Paperback", "Hardcover", "Pocket Edition")), ("language", ("English", "German", "French")),
        ("pages", ("192", "256", "320", "448", "560")),
    ),
}

# Users: countries and their share of the customer base (mostly one home market).
COUNTRIES: Final[tuple[str, ...]] = ("DE", "AT", "CH", "NL", "FR", "PL", "IT", "ES")
COUNTRY_WEIGHTS: Final[tuple[float, ...]] = (0.72, 0.09, 0.05, 0.04, 0.04, 0.03, 0.02, 0.01)

# Countries fraudsters connect from / ship to (never the home market).
FRAUD_IP_COUNTRIES: Final[tuple[str, ...]] = ("RO", "NG", "BR", "US", "VN", "UA", "ID")
DROP_COUNTRIES: Final[tuple[str, ...]] = ("LT", "GB", "US", "BG", "LV")

PHONE_FORMATS: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "DE": ("+49", ("151", "152", "160", "170", "171", "176")),
    "AT": ("+43", ("650", "660", "664", "676", "699")),
    "CH": ("+41", ("76", "77", "78", "79")),
    "NL": ("+31", ("6",)),
    "FR": ("+33", ("6", "7")),
    "PL": ("+48", ("501", "512", "600", "691")),
    "IT": ("+39", ("320", "333", "347", "380")),
    "ES": ("+34", ("600", "622", "655", "699")),
}

# First and last names per country (German-speaking countries share a list).
_GERMAN_FIRST = (
    "Lena", "Jonas", "Anna", "Leon", "Mia", "Lukas", "Emma", "Felix", "Sophie", "Paul", "Hannah", "Maximilian",
    "Laura", "Tim", "Julia", "Finn", "Lea", "Niklas", "Marie", "Jan", "Katharina", "Tobias", "Sarah", "Moritz",
    "Clara", "David", "Johanna", "Simon", "Nina", "Fabian",
)
_GERMAN_LAST = (
    "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann",
    "Koch", "Richter", "Klein", "Wolf", "Schröder", "Neumann", "Schwarz", "Braun", "Zimmermann", "Krüger",
    "Hartmann", "Lange", "Werner", "Krause", "Lehmann", "Köhler", "Huber", "Gruber", "Keller", "Frei",
)
FIRST_NAMES: Final[dict[str, tuple[str, ...]]] = {
    "DE": _GERMAN_FIRST, "AT": _GERMAN_FIRST, "CH": _GERMAN_FIRST,
    "NL": ("Daan", "Sanne", "Bram", "Lotte", "Sem", "Fleur", "Lucas", "Eva", "Thijs", "Noor"),
    "FR": ("Camille", "Louis", "Chloé", "Hugo", "Léa", "Jules", "Manon", "Arthur", "Inès", "Théo"),
    "PL": ("Zuzanna", "Jakub", "Julia", "Antoni", "Zofia", "Jan", "Maja", "Szymon", "Lena", "Filip"),
    "IT": (
        "Giulia", "Leonardo", "Sofia", "Francesco", "Aurora", "Alessandro", "Giorgia", "Lorenzo", "Martina",
        "Matteo",
    ),
    "ES": ("Lucía", "Hugo", "Martina", "Pablo", "Sofía", "Daniel", "Paula", "Alejandro", "Carmen", "Mateo"),
}
LAST_NAMES: Final[dict[str, tuple[str, ...]]] = {
    "DE": _GERMAN_LAST, "AT": _GERMAN_LAST, "CH": _GERMAN_LAST,
    "NL": ("de Jong", "Jansen", "de Vries", "van Dijk", "Bakker", "Visser", "Smit", "Meijer", "de Boer", "Mulder"),
    "FR": ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy", "Moreau"),
    "PL": (
        "Nowak", "Kowalski", "Wiśniewski", "Wójcik", "Kowalczyk", "Kamiński", "Lewandowski", "Zieliński",
        "Szymański", "Woźniak",
    ),
    "IT": ("Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci", "Marino", "Greco"),
    "ES": ("García", "Rodríguez", "González", "Fernández", "López", "Martínez", "Sánchez", "Pérez", "Gómez", "Martín"),
}

EMAIL_DOMAINS: Final[tuple[str, ...]] = ("example.com", "example.org", "example.net", "mail.example.com")

STREETS: Final[dict[str, tuple[str, ...]]] = {
    "DE": (
        "Hauptstraße", "Lindenstraße", "Bahnhofstraße", "Gartenweg", "Schillerstraße", "Goethestraße",
        "Kirchplatz", "Bergstraße", "Rosenweg", "Am Markt", "Friedrichstraße", "Mühlenweg",
    ),
    "AT": ("Mariahilfer Straße", "Landstraße", "Herrengasse", "Schulgasse", "Kirchengasse", "Bahnhofstraße"),
    "CH": ("Bahnhofstrasse", "Dorfstrasse", "Seestrasse", "Hauptstrasse", "Kirchweg", "Rosenweg"),
    "NL": ("Kerkstraat", "Dorpsstraat", "Molenweg", "Stationsweg", "Schoolstraat", "Julianalaan"),
    "FR": (
        "Rue de la Paix", "Rue Victor Hugo", "Avenue Jean Jaurès", "Rue Pasteur", "Rue du Moulin",
        "Boulevard Gambetta",
    ),
    "PL": ("ul. Polna", "ul. Leśna", "ul. Słoneczna", "ul. Krótka", "ul. Szkolna", "ul. Ogrodowa"),
    "IT": ("Via Roma", "Via Garibaldi", "Via Mazzini", "Corso Italia", "Via Dante", "Via Verdi"),
    "ES": ("Calle Mayor", "Calle Real", "Avenida de la Constitución", "Calle del Sol", "Plaza España", "Calle Nueva"),
}

CITIES: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "DE": (
        ("10115", "Berlin"), ("20095", "Hamburg"), ("80331", "München"), ("50667", "Köln"),
        ("60311", "Frankfurt am Main"), ("70173", "Stuttgart"), ("40213", "Düsseldorf"), ("04109", "Leipzig"),
        ("28195", "Bremen"), ("01067", "Dresden"), ("90402", "Nürnberg"), ("30159", "Hannover"),
    ),
    "AT": (("1010", "Wien"), ("8010", "Graz"), ("4020", "Linz"), ("5020", "Salzburg"), ("6020", "Innsbruck")),
    "CH": (("8001", "Zürich"), ("3011", "Bern"), ("4051", "Basel"), ("1201", "Genève"), ("6003", "Luzern")),
    "NL": (
        ("1012", "Amsterdam"), ("3011", "Rotterdam"), ("3511", "Utrecht"), ("2511", "Den Haag"),
        ("5611", "Eindhoven"),
    ),
    "FR": (
        ("75002", "Paris"), ("69001", "Lyon"), ("13001", "Marseille"), ("31000", "Toulouse"),
        ("67000", "Strasbourg"),
    ),
    "PL": (
        ("00-001", "Warszawa"), ("30-001", "Kraków"), ("50-001", "Wrocław"), ("80-001", "Gdańsk"),
        ("60-001", "Poznań"),
    ),
    "IT": (("00118", "Roma"), ("20121", "Milano"), ("10121", "Torino"), ("40121", "Bologna"), ("50121", "Firenze")),
    "ES": (
        ("28001", "Madrid"), ("08001", "Barcelona"), ("46001", "Valencia"), ("41001", "Sevilla"),
        ("48001", "Bilbao"),
    ),
}

AGE_BANDS: Final[tuple[str, ...]] = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
AGE_WEIGHTS: Final[tuple[float, ...]] = (0.14, 0.28, 0.24, 0.17, 0.11, 0.06)

DEVICES: Final[tuple[str, ...]] = ("mobile", "desktop", "tablet", "app")
DEVICE_WEIGHTS: Final[tuple[float, ...]] = (0.48, 0.30, 0.08, 0.14)

PAYMENT_METHODS: Final[tuple[str, ...]] = ("card", "paypal", "klarna")
PAYMENT_WEIGHTS: Final[tuple[float, ...]] = (0.58, 0.27, 0.15)
