// Config fragments for the exfiltration guard (defense.exfiltration, routes[].sensitive), part of the one schema.
import { Type } from '@sinclair/typebox';
import { Obj, GuardModeSchema } from '../../config/schema-util.ts';

export const ExfiltrationSchema = Obj(
  { mode: GuardModeSchema('enforce', 'The exfiltration guard') },
  { default: {}, description: 'Quotas and alerts on bulk extraction from sensitive routes (docs/defense.md).' },
);

export const RouteSensitiveSchema = Obj(
  {
    documentsPerHour: Type.Optional(Type.Integer({ minimum: 1, description: 'Successful responses one identity may get from this route per hour.' })),
  },
  { description: 'Mark the route sensitive: per-identity quotas, alerts and a block when exceeded.' },
);
