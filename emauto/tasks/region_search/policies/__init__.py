"""Region-search policies, registered once in `POLICIES` (name -> factory taking the
policy folder, for ``rl``); each implements `base.RegionSearchPolicy`."""

from __future__ import annotations

from emauto.registry import Registry

#: Every region-search policy, in the benchmark's order.
POLICIES = Registry(
    "region-search policy",
    {
        "channelling": "emauto.tasks.region_search.policies.channelling:ChannellingPolicy",
        "rl": "emauto.tasks.region_search.policies.rl:load_region_policy",
        "dkl": "emauto.tasks.region_search.policies.dkl:DKLPolicy",
        "survey": "emauto.tasks.region_search.policies.baselines:SurveyPolicy",
        "raster": "emauto.tasks.region_search.policies.baselines:RasterPolicy",
        "random": "emauto.tasks.region_search.policies.baselines:RandomPolicy",
    },
)
