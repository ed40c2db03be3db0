"""deploy/mxfleet.toml is a configuration mxfleet accepts, and says what it means."""

from pathlib import Path

from shared.rates import Rate
from shared.settings import load_settings

EXAMPLE = Path(__file__).parents[2] / "deploy" / "mxfleet.toml"


def test_the_example_configuration_loads() -> None:
    settings = load_settings({"MXFLEET_CONFIG": str(EXAMPLE)})
    policies = settings.policies
    assert settings.hostname == "mx1.example.com"
    assert sorted(policies.named) == ["google", "microsoft", "yahoo"]
    google = policies.destination("gmail.com", ["gmail-smtp-in.l.google.com"])
    assert (google.name, google.policy.rate) == ("policy:google", Rate(3000, 60))
    assert policies.destination("mail.yahoo.com", None).name == "policy:yahoo"
    assert policies.get("microsoft").max_recipients_per_transaction == 50
    assert policies.get("yahoo").adaptive_recovery == 60
