// Traffic classes: what a route declares its requests to be (routes[].class). Admission orders and
// reserves slots by class, the level and the metrics label by it; the order here is the default
// priority, most important first (docs/admission.md).
export const TRAFFIC_CLASSES = ['critical', 'authenticated', 'cacheable', 'public', 'static'] as const;
export type TrafficClass = (typeof TRAFFIC_CLASSES)[number];

/** The class's index in TRAFFIC_CLASSES: per-class arrays are indexed by it. */
export function classIndex(cls: TrafficClass): number {
  return TRAFFIC_CLASSES.indexOf(cls);
}
