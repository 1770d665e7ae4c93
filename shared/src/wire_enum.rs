//! `wire_enum!`: fieldless enums whose numbers cross the host/guest
//! boundary, with the number-to-value table generated from the
//! declaration so the two cannot drift apart.

/// Defines a `pub` fieldless enum with an explicit wire number per variant
/// and a `#[repr]` of the given integer type:
///
/// ```text
/// wire_enum! {
///     /// Docs.
///     pub enum Mode: u8 {
///         /// Docs.
///         A = 1 => "a",
///         /// Docs.
///         B = 2 => "b",
///     }
/// }
/// ```
///
/// Generates `ALL` (every value, in declaration order), `TryFrom<repr>`
/// (the error is the unknown number) and [`crate::wire::Wire`] (the
/// number as a field); for `u8` enums also
/// a `const fn from_u8`. With `=> "name"` after every variant, also
/// `name()` and `from_name()`.
macro_rules! wire_enum {
    // `from_u8` for `u8` enums only.
    (@from_u8 u8 $ty:ident) => {
        impl $ty {
            /// The value with this wire number, if any.
            pub const fn from_u8(v: u8) -> Option<Self> {
                Self::from_repr(v)
            }
        }
    };
    (@from_u8 $repr:ident $ty:ident) => {};

    // With a name per variant.
    (
        $(#[$m:meta])*
        pub enum $ty:ident: $repr:ident {
            $($(#[$vm:meta])* $v:ident = $n:literal => $name:literal,)*
        }
    ) => {
        wire_enum! {
            $(#[$m])*
            pub enum $ty: $repr { $($(#[$vm])* $v = $n,)* }
        }

        impl $ty {
            /// The name used in reports, on the command line and in JSON.
            pub const fn name(self) -> &'static str {
                match self { $($ty::$v => $name,)* }
            }

            /// The value with this name, if any.
            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.name() == name)
            }
        }
    };

    // Numbers only.
    (
        $(#[$m:meta])*
        pub enum $ty:ident: $repr:ident {
            $($(#[$vm:meta])* $v:ident = $n:literal,)*
        }
    ) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr($repr)]
        pub enum $ty { $($(#[$vm])* $v = $n,)* }

        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$v,)*];

            const fn from_repr(v: $repr) -> Option<Self> {
                match v { $($n => Some($ty::$v),)* _ => None }
            }
        }

        impl TryFrom<$repr> for $ty {
            type Error = $repr;

            fn try_from(v: $repr) -> Result<Self, $repr> {
                Self::from_repr(v).ok_or(v)
            }
        }

        impl $crate::wire::Wire<'_> for $ty {
            fn put(&self, w: &mut $crate::wire::Writer<'_>) {
                w.put(&(*self as $repr));
            }
            fn get(r: &mut $crate::wire::Reader<'_>) -> Result<Self, $crate::wire::WireError> {
                let v: $repr = r.get()?;
                Self::from_repr(v).ok_or($crate::wire::WireError::BadValue(v.into()))
            }
        }

        wire_enum!(@from_u8 $repr $ty);
    };
}
