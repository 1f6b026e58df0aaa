"""Keys and headers shared by the control-plane tests."""

from __future__ import annotations

from safeship.settings import Settings, load_settings

READ_KEY = "ss_read_Lq8Vw2Nx7Rt4Pb9Mk3Hc6Jd1Gf5Zs0Ay"
ADMIN_KEY = "ss_admin_Tz5Qm8Wr2Lx7Nv4Pk9Bc3Hd6Jf1Gs0Ey"


def make_settings(database_url: str) -> Settings:
    return load_settings(
        {
            "SAFESHIP_DATABASE_URL": database_url,
            "SAFESHIP_ADMIN_KEYS": f"reader:read:{READ_KEY},operator:admin:{ADMIN_KEY}",
            "SAFESHIP_SESSION_SECRET": "test-session-secret-Zq8Wv3Nr7Tb2Lk9Mx4",
            "SAFESHIP_HEALTH_CACHE_SECONDS": "0",
        }
    )


def read_headers() -> dict[str, str]:
    return {"X-API-Key": READ_KEY}


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}
